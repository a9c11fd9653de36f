"""The sizing model of docs/capacity.md: measured per-key bytes and per-value CPU in,
the processes, machines and Redis nodes a deployment needs out.

Pure arithmetic, no measuring (``capacity.py`` measures): so the model can be tested,
and re-run on other figures. Every input is one a re-run of ``python -m benchmarks
capacity`` measures again, bytes per tick included (a tick that grows, such as a count
kept beside each subtotal, changes the answer without touching this file).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GIB = 2**30

# The plan's assumptions (docs/capacity.md says why each): what one machine is, and how
# full a core or a machine is planned.
MACHINE_CORES = 8
MACHINE_GIB = 32
CPU_TARGET = 0.5  # a core planned at half load: peaks, reads, a failover's catch-up
PROCESS_GIB = 24  # memory storage: keys held by one process, on one machine of 32 GiB
REDIS_NODE_GIB = 16  # data per Redis node: room left for a fork's copy-on-write and fragmentation
PROCESS_BASE_GIB = 0.04  # what a ringsum process holds before any key


@dataclass(frozen=True)
class Scenario:
    """A load to size for: ``busy_keys`` get a value in every tick of the window (a ring
    of ``ticks`` cells), the others one tick each (a value an hour or less)."""

    name: str
    keys: int
    busy_keys: int
    values_per_s: float
    ticks: int = 3601  # a 1 h window of 1 s ticks, both ends held
    batch: int = 1000  # events per request when batched

    @property
    def sparse_keys(self) -> int:
        return self.keys - self.busy_keys


SCENARIOS = (
    Scenario("1M keys, 100k values/s", keys=1_000_000, busy_keys=100_000, values_per_s=100_000),
    Scenario("1M keys, 1M values/s", keys=1_000_000, busy_keys=100_000, values_per_s=1_000_000),
    Scenario("1M keys all busy, 1M values/s", keys=1_000_000, busy_keys=1_000_000, values_per_s=1_000_000),
)


@dataclass(frozen=True)
class Figures:
    """What was measured. Bytes: per key, all in (RSS for memory storage, ``used_memory``
    for Redis). CPU: microseconds per value, in ringsum's processes (app) and in
    redis-server (summed over a Cluster's nodes), single posts and batches."""

    memory_sparse_bytes: float
    memory_busy_bytes: float
    redis_sparse_bytes: float
    redis_busy_bytes: float
    memory_app_us: dict[str, float]  # "single" / "batch"
    redis_app_us: dict[str, float]
    redis_server_us: dict[str, float]
    cluster_app_us: dict[str, float]
    cluster_server_us: dict[str, float]
    measured_ticks: int = 3601

    def tick_bytes(self, storage: str) -> float:
        """What one more tick held costs a key: the busy key over the sparse one."""
        sparse, busy = getattr(self, f"{storage}_sparse_bytes"), getattr(self, f"{storage}_busy_bytes")
        return (busy - sparse) / (self.measured_ticks - 1)

    def key_bytes(self, storage: str, scenario: Scenario) -> float:
        """All the keys of ``scenario`` in ``storage`` ("memory" or "redis"), in bytes."""
        sparse = getattr(self, f"{storage}_sparse_bytes")
        busy = sparse + (scenario.ticks - 1) * self.tick_bytes(storage)
        return scenario.sparse_keys * sparse + scenario.busy_keys * busy


@dataclass(frozen=True)
class Plan:
    """What ``scenario`` needs on one storage, with single posts or batches."""

    storage: str
    requests: str
    app_cores: float  # busy cores of ringsum's processes (before CPU_TARGET)
    app_processes: int
    app_machines: int
    data_gib: float
    redis_cores: float = 0.0  # busy cores of redis-server's main threads, all nodes
    redis_nodes: int = 0  # 1: one Redis; more: Cluster primaries

    @property
    def machines(self) -> int:
        """App machines plus one machine per Redis node (replicas not counted)."""
        return self.app_machines + self.redis_nodes


def memory_plan(figures: Figures, scenario: Scenario, requests: str) -> Plan:
    """Memory storage: one process uses one core and holds its keys; past one process,
    shards routed by key (each key always to the same process)."""
    cores = scenario.values_per_s * figures.memory_app_us[requests] / 1e6
    data_gib = figures.key_bytes("memory", scenario) / GIB
    processes = max(1, math.ceil(cores / CPU_TARGET), math.ceil(data_gib / PROCESS_GIB))
    machine_gib = (data_gib + processes * PROCESS_BASE_GIB) / (MACHINE_GIB * 0.75)
    machines = max(math.ceil(processes / MACHINE_CORES), math.ceil(machine_gib))
    return Plan("memory", requests, cores, processes, machines, data_gib)


def redis_plan(figures: Figures, scenario: Scenario, requests: str) -> Plan:
    """Redis: app workers on as many machines as their CPU needs; one Redis while one
    node's core and memory suffice, else a Cluster (whose per-value CPU is its own)."""
    data_gib = figures.key_bytes("redis", scenario) / GIB
    nodes, redis_cores, app_us = 1, 0.0, figures.redis_app_us[requests]
    for server_us, app in (
        (figures.redis_server_us, figures.redis_app_us),
        (figures.cluster_server_us, figures.cluster_app_us),
    ):
        redis_cores = scenario.values_per_s * server_us[requests] / 1e6
        app_us = app[requests]
        nodes = max(1, math.ceil(redis_cores / CPU_TARGET), math.ceil(data_gib / REDIS_NODE_GIB))
        if nodes == 1:
            break
    app_cores = scenario.values_per_s * app_us / 1e6
    processes = max(1, math.ceil(app_cores / CPU_TARGET))
    return Plan(
        "redis" if nodes == 1 else "cluster",
        requests,
        app_cores,
        processes,
        math.ceil(processes / MACHINE_CORES),
        data_gib,
        redis_cores,
        nodes,
    )


def plans(figures: Figures, scenarios: tuple[Scenario, ...] = SCENARIOS) -> list[tuple[Scenario, Plan]]:
    """Every scenario on both storages, single posts and batches."""
    return [
        (scenario, plan(figures, scenario, requests))
        for scenario in scenarios
        for plan in (memory_plan, redis_plan)
        for requests in ("single", "batch")
    ]


def table(figures: Figures, scenarios: tuple[Scenario, ...] = SCENARIOS) -> str:
    """The model's answer as the Markdown table docs/capacity.md shows."""
    lines = [
        "| scenario | storage, requests | data | ringsum CPU | ringsum processes / machines | "
        "redis-server CPU | Redis nodes | machines |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for scenario, plan in plans(figures, scenarios):
        requests = "single posts" if plan.requests == "single" else f"batches of {scenario.batch:,}"
        redis = "-" if plan.storage == "memory" else f"{plan.redis_cores:,.1f} cores"
        nodes = (
            "-" if plan.storage == "memory" else f"{plan.redis_nodes}" + (" (Cluster)" if plan.redis_nodes > 1 else "")
        )
        lines.append(
            f"| {scenario.name} | {plan.storage}, {requests} | {plan.data_gib:,.1f} GiB | {plan.app_cores:,.1f} cores | "
            f"{plan.app_processes:,} / {plan.app_machines:,} | {redis} | {nodes} | {plan.machines:,} |"
        )
    return "\n".join(lines)
