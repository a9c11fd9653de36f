"""Key layout 2 on Redis and Cluster: what a key costs (a log while sparse, a ring once
busy, a log again when quiet), exact int64 sums, the refusals, and a window changed
under data already written. Answers are checked against memory storage, which has
none of these structures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import redis
from flask import Flask
from freezegun import freeze_time

import ringsum.storage.redis as redis_storage
from ringsum import load_settings
from ringsum.storage import SumOutOfRange, WindowStats, open_storage
from ringsum.storage import redis_layout as layout
from ringsum.storage.memory import MemoryStorage
from ringsum.storage.redis import RedisStorage

T0 = 1_767_225_600_000_000
MAX_VALUE = 2**53 - 1
SPARSE_BEFORE, BUSY_GOAL = 462, 64 * 1024  # MEMORY USAGE of layout 1's one-tick key; the goal for a busy key


@pytest.fixture(params=["redis", "cluster"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


class Pair:
    """A Redis storage and a memory storage on one manual clock, fed alike."""

    def __init__(self, storage_uri: str, window: str, resolution: str = "1s") -> None:
        self.config = load_settings(
            {"RINGSUM_STORAGE_URI": storage_uri, "RINGSUM_WINDOW": window, "RINGSUM_RESOLUTION": resolution}
        )
        self.now = T0
        self.redis = open_storage(storage_uri, self.config.storage_options(), clock=lambda: self.now)
        assert isinstance(self.redis, RedisStorage)
        self.memory = MemoryStorage(self.config.storage_options(), clock=lambda: self.now)

    def record(self, key: str, value: int) -> None:
        self.redis.record(key, value)
        self.memory.record(key, value)

    def assert_same(self, *keys: str) -> None:
        """Same sums and series for each of ``keys``; then the same entries held (memory
        ages a key out when it is touched: touch every key that holds some first)."""
        for key in keys:
            for share in (None, 2, 7):
                window_us = None if share is None else self.config.window_us // share
                assert self.redis.total(key, window_us) == self.memory.total(key, window_us)
                assert self.redis.window_stats(key, window_us) == self.memory.window_stats(key, window_us)
            step_us = self.config.window_us // 6
            for with_counts in (False, True):
                assert self.redis.series(key, step_us, with_counts) == self.memory.series(key, step_us, with_counts)
        assert self.redis.count()[1] == self.memory.stats().entries

    def close(self) -> None:
        self.redis.close()
        self.memory.close()


@pytest.fixture
def pair(storage_uri: str) -> Iterator[Callable[..., Pair]]:
    made: list[Pair] = []

    def make(window: str, resolution: str = "1s") -> Pair:
        made.append(Pair(storage_uri, window, resolution))
        return made[-1]

    yield make
    for each in made:
        each.close()


@pytest.mark.parametrize("backend", ["redis"])
def test_a_busy_key_costs_a_ring_of_cells_and_a_sparse_one_a_few_pairs(
    pair: Callable[..., Pair], redis_primaries: list[redis.Redis]
) -> None:
    """One hour of 1 s ticks, a value every tick: 3,601 slots held, as issue 22 measured."""
    both = pair("1h")
    both.record("sparse", 3)
    for tick in range(3601):
        both.record("busy", tick % 11 - 3)
        if tick < 3600:
            both.now += 1_000_000
    node = redis_primaries[0]
    sparse, busy = (node.memory_usage(layout.string_key(key)) for key in ("sparse", "busy"))
    assert sparse < SPARSE_BEFORE / 2, sparse
    # 3,601 cells of 12 bytes (an int64 subtotal, a uint32 count), in a 48 KiB allocation
    assert busy <= BUSY_GOAL * 0.76, busy
    found = layout.header(node.get(layout.string_key("busy")))
    assert (found.form, found.count, found.cells) == (b"R", 3601, 3601)
    both.assert_same("busy")

    # Quiet again: once it holds a quarter of the threshold or less, the key is a log again.
    both.now += (3600 - 100) * 1_000_000
    both.assert_same("busy")
    found = layout.header(node.get(layout.string_key("busy")))
    assert found.form == b"L" and found.count <= 3601 // redis_storage.RING_SHARE // 4
    assert node.memory_usage(layout.string_key("busy")) < 4096
    both.record("busy", 5)
    both.assert_same("busy")


def test_keys_change_form_as_they_fill_and_empty_with_the_same_answers(pair: Callable[..., Pair]) -> None:
    both = pair("20s")
    both.redis._ring_at = 8  # a ring past 8 slots, a log again at 2
    forms = []
    for tick in range(60):
        both.record("k", tick)
        if tick % 3 == 0:
            both.record("k", -tick)  # same tick: merged
        both.now += 1_000_000 if tick < 30 else 15_000_000  # busy, then a slot in a window or two
        both.assert_same("k")
        string = layout.string_key("k")
        forms.append(layout.header(both.redis._connect().get(string)).form)
    assert forms[:8] == [b"L"] * 8 and forms[8] == b"R" and forms[-1] == b"L"


def test_a_sum_leaving_int64_over_several_writes_is_refused_and_changes_nothing(make_app: Callable[..., Flask]) -> None:
    """The script checks the total and the tick's subtotal exactly (two 32-bit halves)."""
    client = make_app().test_client()
    with freeze_time("2026-01-01 12:00:00") as clock:
        assert client.post("/metric", json=[{"key": "big", "value": MAX_VALUE}] * 1000).status_code == 200
        clock.tick(timedelta(seconds=5))
        assert client.post("/metric", json=[{"key": "big", "value": MAX_VALUE}] * 24).status_code == 200
        too_much = client.post("/metric", json=[{"key": "other", "value": 1}, {"key": "big", "value": MAX_VALUE}])
        assert too_much.status_code == 422 and "int64" in too_much.get_json()["detail"]
        # 1024 * (2**53 - 1) = 2**63 - 1024 is held; one more is past int64
        assert client.get("/metric").get_json()["metrics"] == [{"key": "big", "value": 1024 * MAX_VALUE}]
        assert client.post("/metric/big", json={"value": -MAX_VALUE}).status_code == 200
        assert client.get("/metric/big/sum").get_json() == {"value": 1023 * MAX_VALUE}


@pytest.mark.parametrize("backend", ["redis"])  # one script for the batch (Cluster: one per slot)
def test_a_refused_batch_leaves_the_keys_it_aged_out_whole(pair: Callable[..., Pair]) -> None:
    """The record script ages every key of a batch out before it checks their sums; a
    refusal then still writes back what ageing out changed, and nothing else."""
    both = pair("10s")
    both.redis._ring_at = 2
    for tick in range(6):  # "a": a ring of 6 slots; "b": 1024 * (2**53 - 1) = 2**63 - 1024 in 3 slots
        both.record("a", 1)
        if tick in (0, 4, 5):
            for storage in (both.redis, both.memory):
                storage.record_many([("b", MAX_VALUE)] * (512 if tick == 0 else 256))
        both.now += 1_000_000
    both.now += 6_000_000  # 12 s on: "a" has 2 slots to age out on its next touch, "b" one
    with pytest.raises(SumOutOfRange):  # b: 512 + 513 values of 2**53 - 1 is past int64
        both.redis.record_many([("a", 5), *[("b", MAX_VALUE)] * 513])
    both.assert_same("a", "b")
    both.record("a", 2)
    both.record("b", 1)
    both.assert_same("a", "b")


def test_a_total_past_int64_left_by_values_ageing_out_stays_exact(make_app: Callable[..., Flask]) -> None:
    """-5.4e18, then +5.4e18 twice: every write leaves a total inside int64, but once
    the first ages out the two left sum to 1.08e19. It is answered exactly, as memory
    storage does; a write while it lasts is refused."""
    client = make_app(RINGSUM_WINDOW="1m").test_client()
    with freeze_time("2026-01-01 12:00:00") as clock:
        for value in (-MAX_VALUE, MAX_VALUE, MAX_VALUE):
            assert client.post("/metric", json=[{"key": "k", "value": value}] * 600).status_code == 200
            clock.tick(timedelta(seconds=20))
        clock.tick(timedelta(seconds=1))  # 61 s after the first
        assert client.get("/metric/k/sum").get_json() == {"value": 1200 * MAX_VALUE}
        assert client.get("/metric/k/sum?window=30s").get_json() == {"value": 600 * MAX_VALUE}
        assert client.post("/metric/k", json={"value": 1}).status_code == 422
        clock.tick(timedelta(seconds=20))
        assert client.get("/metric/k/sum").get_json() == {"value": 600 * MAX_VALUE}
        assert client.post("/metric/k", json={"value": 1}).status_code == 200


def test_an_exact_mode_key_holds_what_one_redis_string_can_then_507(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exact mode keeps a pair per distinct microsecond; a Redis string holds 512 MB,
    about 26 million. Shown here with a string cut to three pairs."""
    text = redis_storage._script_text
    monkeypatch.setattr(
        redis_storage,
        "_script_text",
        lambda name: text(name).replace("local MAX_STRING = 536870912", "local MAX_STRING = HEADER + PAIR * 3"),
    )
    client = make_app(RINGSUM_RESOLUTION="0").test_client()
    with freeze_time("2026-01-01 12:00:00") as clock:
        for _ in range(3):
            assert client.post("/metric/k", json={"value": 1}).status_code == 200
            clock.tick(timedelta(milliseconds=1))
        full = client.post("/metric", json=[{"key": "other", "value": 1}, {"key": "k", "value": 1}])
        assert full.status_code == 507 and "Redis string" in full.get_json()["detail"]
        assert client.get("/metric").get_json()["metrics"] == [{"key": "k", "value": 3}]  # nothing at all
        clock.tick(timedelta(hours=1) - timedelta(milliseconds=2))  # the first value ages out
        assert client.post("/metric/k", json={"value": 1}).status_code == 200
        assert client.get("/metric/k/sum").get_json() == {"value": 3}


def test_a_window_changed_under_written_data_resizes_the_ring(pair: Callable[..., Pair]) -> None:
    """RINGSUM_WINDOW raised from 10 s to 20 s, the Redis kept: keys written as rings of
    11 cells become rings of 21, and nothing counted is lost or misplaced."""
    short, longer = pair("10s"), pair("20s")
    for _ in range(10):
        short.redis.record("k", 1)
        longer.memory.record("k", 1)  # the reference: the longer window, fed alike
        short.now = longer.now = short.now + 1_000_000
    assert layout.header(short.redis._connect().get(layout.string_key("k"))).cells == 11
    longer.assert_same("k")
    for tick in range(25):
        longer.record("k", tick)
        longer.now += 1_000_000
        longer.assert_same("k")
    found = layout.header(longer.redis._connect().get(layout.string_key("k")))
    assert (found.form, found.cells) == (b"R", 21)


@pytest.mark.parametrize("backend", ["redis"])
def test_the_record_script_refuses_a_call_that_does_not_match_its_header(pair: Callable[..., Pair]) -> None:
    """KEYS and ARGV by position, with the count of metric keys (lua/record.lua): a call
    that names more or fewer is refused, not read some other way."""
    storage = pair("10s").redis
    value = layout.packed_value(1)
    ttl = storage._ttl_ms
    for keys, args in (
        ([layout.string_key("a"), layout.string_key("b")], [ttl, "", "1", "", value]),  # a key too many
        ([layout.string_key("a")], [ttl, "", "1", "index", value]),  # the index named, not given
        ([layout.string_key("a")], [ttl, "", "1", "", value, value]),  # a value too many
    ):
        with pytest.raises(redis.exceptions.ResponseError, match="RINGSUM_CALL"):
            storage._run_prepared("record", [(keys, args)])
    assert storage.keys().metrics == []


def test_a_tick_counts_at_most_a_uint32_of_values_and_past_it_nothing_is_recorded(
    pair: Callable[..., Pair], backend: str
) -> None:
    """A cell's count is a uint32: a write that would take a tick's count past it is
    refused (a 422), never wrapped. (4 billion values in one tick of one key: the
    limit is there to be exact, not to be met.)"""
    storage = pair("10s").redis
    storage._record({"k": 5}, {"k": 2**32 - 2}, None)  # as if that many values had come in this tick
    storage.record("k", 1)
    assert storage.window_stats("k") == WindowStats(6, 2**32 - 1)
    with pytest.raises(SumOutOfRange, match="count past 4,294,967,295"):
        storage.record_many([("other", 1), ("k", 1)])
    assert storage.window_stats("k") == WindowStats(6, 2**32 - 1)
    if backend == "redis":  # one script; on Cluster a batch is atomic per hash slot (README)
        assert storage.total("other") == 0
