"""The sizing model of docs/capacity.md (benchmarks/capacity_model.py): its arithmetic
on figures chosen by hand, so a change to the model is a change the doc must follow."""

from __future__ import annotations

import pytest

from benchmarks.capacity_model import GIB, Figures, Scenario, memory_plan, redis_plan, table

FIGURES = Figures(
    memory_sparse_bytes=330,
    memory_busy_bytes=330 + 3600 * 10,  # 10 B a tick
    redis_sparse_bytes=300,
    redis_busy_bytes=300 + 3600 * 9,
    memory_app_us={"single": 300, "batch": 2},
    redis_app_us={"single": 400, "batch": 3},
    redis_server_us={"single": 100, "batch": 4},
    cluster_app_us={"single": 500, "batch": 30},
    cluster_server_us={"single": 120, "batch": 40},
)
MIX = Scenario("mix", keys=1_000_000, busy_keys=100_000, values_per_s=100_000)


def test_a_tick_costs_what_a_busy_key_costs_over_a_sparse_one() -> None:
    assert FIGURES.tick_bytes("memory") == pytest.approx(10)
    assert FIGURES.tick_bytes("redis") == pytest.approx(9)
    # 900,000 sparse keys and 100,000 busy ones
    assert FIGURES.key_bytes("memory", MIX) == pytest.approx(900_000 * 330 + 100_000 * 36_330)


def test_a_busy_key_of_a_shorter_window_costs_fewer_ticks() -> None:
    minute = Scenario("minute", keys=10, busy_keys=10, values_per_s=1, ticks=61)
    assert FIGURES.key_bytes("memory", minute) == pytest.approx(10 * (330 + 60 * 10))


def test_memory_storage_needs_a_process_per_half_core_or_per_24_gib() -> None:
    batched = memory_plan(FIGURES, MIX, "batch")
    assert batched.app_cores == pytest.approx(0.2)  # 100,000 values/s x 2 µs
    assert (batched.app_processes, batched.app_machines) == (1, 1)
    single = memory_plan(FIGURES, MIX, "single")
    assert single.app_cores == pytest.approx(30)
    assert (single.app_processes, single.app_machines) == (60, 8)  # 60 half-loaded cores, 8 a machine
    huge = Scenario("huge", keys=10_000_000, busy_keys=10_000_000, values_per_s=1)
    assert memory_plan(FIGURES, huge, "batch").app_processes == -(-10_000_000 * 36_330 // (24 * GIB))


def test_one_redis_while_one_node_suffices_then_a_cluster_at_its_own_cost() -> None:
    one = redis_plan(FIGURES, Scenario("small", keys=1000, busy_keys=0, values_per_s=100_000), "batch")
    assert (one.storage, one.redis_nodes) == ("redis", 1)  # 0.4 of a core
    assert one.app_cores == pytest.approx(0.3)
    cluster = redis_plan(FIGURES, MIX, "single")  # 10 cores of redis-server on one node: too many
    assert cluster.storage == "cluster"
    assert cluster.redis_cores == pytest.approx(12)  # the Cluster's own 120 µs a value
    assert cluster.redis_nodes == 24  # each at half load
    assert cluster.app_cores == pytest.approx(50)
    assert cluster.machines == cluster.app_machines + 24


def test_the_table_has_a_row_per_scenario_storage_and_request_shape() -> None:
    rows = table(FIGURES, (MIX,)).splitlines()
    assert len(rows) == 2 + 4
    assert rows[2].startswith("| mix | memory, single posts |")
    assert "batches of 1,000" in rows[3]
