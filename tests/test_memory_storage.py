"""Memory storage only: its memory bound, its sweep, its thread safety and its snapshot.
(The API tests run on every backend; these look inside the one process that holds the data.)"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from ringsum.config import load_settings
from ringsum.storage.memory import MemoryStorage
from ringsum.storage.snapshot import write_snapshot

START = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)
START_US = int(START.timestamp()) * 1_000_000
MINUTE_US = 60_000_000


class ManualClock:
    """Epoch µs that move only when told: cheaper than freezegun for 100,000 steps."""

    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


def memory_storage(clock: ManualClock, **settings: str) -> MemoryStorage:
    return MemoryStorage(load_settings({"RINGSUM_STORAGE_URI": "memory://", **settings}), clock=clock)


def test_one_key_holds_at_most_window_over_resolution_plus_one_entries() -> None:
    clock = ManualClock(START_US + 123)
    storage = memory_storage(clock, RINGSUM_WINDOW="1h", RINGSUM_RESOLUTION="1s")
    bound = 3600 + 1
    adds, stride_us = 100_000, 2 * 3_600_000_000 // 100_000  # two full windows, 72 ms apart
    most_held, recorded = 0, []
    try:
        for n in range(adds):
            storage.record("busy", n)
            recorded.append((clock.now_us, n))
            if n % 10 == 0 or n > adds - 100:
                most_held = max(most_held, storage.stats().entries)
            clock.now_us += stride_us
        clock.now_us -= stride_us
        assert storage.stats().keys == 1
        assert 3000 < most_held <= bound  # full (every tick had values), never over
        live = [v for t, v in recorded if clock.now_us // 1_000_000 - t // 1_000_000 <= 3600]
        assert storage.total("busy") == sum(live)
    finally:
        storage.close()


def test_the_sweep_frees_keys_nobody_touches_any_more(make_memory_app) -> None:
    app = make_memory_app(RINGSUM_WINDOW="1m")
    storage, client = app.extensions["ringsum.storage"], app.test_client()
    with freeze_time(START) as clock:
        for n in range(2500):  # more than one sweep slice
            client.post(f"/metric/idle{n}", json={"value": 1})
        clock.tick(timedelta(seconds=30))
        client.post("/metric/busy", json={"value": 2})
        storage.sweep()
        assert storage.stats().keys == 2501  # nothing aged out yet: the sweep keeps it all
        clock.tick(timedelta(seconds=31))
        storage.sweep()
        assert storage.stats().keys == 1
        assert storage.keys().metrics == [("busy", 2)]
        clock.tick(timedelta(seconds=30))
        storage.sweep()
        assert storage.stats().keys == 0
        assert storage.stats().entries == 0


def test_the_sweep_drops_exactly_the_keys_whose_newest_value_aged_out() -> None:
    """The sweep reads keys oldest-written first and stops at the first live one, so a
    key written again must move behind the others, and one written in the same tick
    must not need to."""
    clock = ManualClock(START_US)
    storage = memory_storage(clock, RINGSUM_WINDOW="1m", RINGSUM_RESOLUTION="1s")
    try:
        for key in ("first", "second", "third", "fourth"):
            storage.record(key, 1)
        clock.now_us += 10_000_000
        storage.record("first", 2)  # a new tick: "first" now expires last
        clock.now_us += 500_000
        storage.record("first", 3)  # the same tick again
        storage.record("fourth", 4)  # "fourth" also moves behind "second" and "third"
        clock.now_us = START_US + 61_000_000  # the first tick's values have aged out
        storage.sweep()
        assert storage.stats().keys == 2  # (stats() ages nothing out by itself)
        assert [key for key, _ in storage.keys("").metrics] == ["first", "fourth"]
        assert storage.total("first") == 5 and storage.total("fourth") == 4
        clock.now_us = START_US + 71_000_000  # and now every value has
        storage.sweep()
        assert storage.stats().keys == 0
    finally:
        storage.close()


def test_a_restored_snapshot_is_swept_in_the_order_its_keys_were_written(tmp_path) -> None:
    path = tmp_path / "snapshot.json"
    minute = 60_000_000
    entries = {"late": [[START_US - minute, 1], [START_US - 10_000_000, 2]], "early": [[START_US - 50_000_000, 3]]}
    write_snapshot(str(path), entries.items())
    clock = ManualClock(START_US)
    storage = memory_storage(clock, RINGSUM_WINDOW="1m", RINGSUM_SNAPSHOT_PATH=str(path))
    try:
        clock.now_us = START_US + 15_000_000  # "early" aged out; "late" holds its newer value
        storage.sweep()
        assert storage.stats().keys == 1  # (stats() ages nothing out by itself)
        assert storage.keys("").metrics == [("late", 2)]
    finally:
        storage.close()


def test_the_background_sweep_runs_about_once_a_second(make_memory_app) -> None:
    storage = make_memory_app(RINGSUM_WINDOW="1m").extensions["ringsum.storage"]
    with freeze_time(START) as clock:  # the app's clock shows the sweeper the frozen time too
        for n in range(100):
            storage.record(f"idle{n}", 1)
        storage.sweep()
        assert storage.stats().keys == 100
        clock.tick(timedelta(minutes=2))
        deadline = time.monotonic() + 10  # the sweeper waits in real time; allow for a loaded machine
        while storage.stats().keys and time.monotonic() < deadline:
            threading.Event().wait(0.05)
        assert storage.stats().keys == 0


def test_reading_unknown_keys_creates_no_keys(make_memory_app) -> None:
    app = make_memory_app()
    storage, client = app.extensions["ringsum.storage"], app.test_client()
    for n in range(1000):
        assert client.get(f"/metric/never{n}/sum").get_json() == {"value": 0}
    assert storage.stats().keys == 0
    assert storage.total("never1") == 0 and storage.keys().metrics == []
    assert storage.stats().keys == 0


def test_concurrent_records_sweeps_and_snapshots_lose_nothing(tmp_path) -> None:
    clock = ManualClock(START_US)
    storage = memory_storage(clock, RINGSUM_SNAPSHOT_PATH=str(tmp_path / "snap.json"))
    threads, per_thread = 8, 2000
    go = threading.Barrier(threads + 1)

    def writer(index: int) -> None:
        go.wait()
        for n in range(per_thread):
            storage.record("shared", 1)
            storage.record(f"own{index}", n)

    workers = [threading.Thread(target=writer, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    go.wait()
    while any(worker.is_alive() for worker in workers):
        storage.sweep()
        storage._export()  # what close() writes, taken while writers write
    for worker in workers:
        worker.join()
    try:
        assert storage.total("shared") == threads * per_thread
        assert all(storage.total(f"own{i}") == sum(range(per_thread)) for i in range(threads))
    finally:
        storage.close()


# -- snapshots ---------------------------------------------------------------------


def test_close_writes_a_snapshot_that_the_next_start_restores(tmp_path) -> None:
    path = tmp_path / "snap.json"
    clock = ManualClock(START_US)
    first = memory_storage(clock, RINGSUM_WINDOW="1h", RINGSUM_SNAPSHOT_PATH=str(path))
    first.record("old", 4)
    clock.now_us += 30 * MINUTE_US
    first.record("kept", 3)
    first.record("old", 1)
    first.close()
    assert not [p.name for p in tmp_path.iterdir() if p.name != "snap.json"]  # the temporary file was renamed

    clock.now_us += 30 * MINUTE_US + 1_000_000  # down 30 min: the first "old" value has aged out
    second = memory_storage(clock, RINGSUM_WINDOW="1h", RINGSUM_SNAPSHOT_PATH=str(path))
    try:
        assert second.total("kept") == 3
        assert second.total("old") == 1
        clock.now_us += 30 * MINUTE_US
        assert second.stats().keys == 2 and second.total("kept") == 0
    finally:
        second.close()


def test_a_snapshot_whose_values_all_aged_out_restores_no_keys(tmp_path) -> None:
    path = tmp_path / "snap.json"
    write_snapshot(str(path), [("stale", [(START_US, 5)]), ("fresh", [(START_US + 2 * 3_600_000_000, 6)])])
    storage = memory_storage(ManualClock(START_US + 2 * 3_600_000_000), RINGSUM_SNAPSHOT_PATH=str(path))
    try:
        assert storage.stats().keys == 1
        assert storage.keys().metrics == [("fresh", 6)]
    finally:
        storage.close()


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe\x00",
        b"[]",
        b'{"version": 99, "keys": {}}',
        b'{"version": 1, "keys": {"a": [[1, 2, 3]]}}',
        b'{"version": 1, "keys": {"a": [[1.5, 2]]}}',
        b'{"version": 1, "keys": []}',
        b"",
    ],
)
def test_an_unreadable_snapshot_is_moved_aside_and_the_service_starts_empty(tmp_path, caplog, content: bytes) -> None:
    path = tmp_path / "snap.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        storage = memory_storage(ManualClock(START_US), RINGSUM_SNAPSHOT_PATH=str(path))
    try:
        assert storage.stats().keys == 0
        assert (tmp_path / "snap.json.corrupt").read_bytes() == content
        assert not path.exists()
        assert any("snap.json.corrupt" in record.getMessage() for record in caplog.records)
        storage.record("a", 1)
    finally:
        storage.close()
    assert json.loads(path.read_text())["keys"] == {"a": [[START_US // 1_000_000 * 1_000_000, 1]]}


def test_a_snapshot_write_that_fails_leaves_the_previous_one_whole(tmp_path) -> None:
    path = tmp_path / "snap.json"
    write_snapshot(str(path), [("a", [(START_US, 1)])])
    before = path.read_bytes()

    def failing_midway():
        yield ("b", [(START_US, 2)])
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_snapshot(str(path), failing_midway())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["snap.json"]  # the temporary file is gone too
