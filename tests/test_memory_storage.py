"""Memory storage only: its memory bound, its sweep, its thread safety and its data dir.
(The API tests run on every backend; these look inside the one process that holds the data.)"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time
from helpers import ManualClock, memory_storage

from ringsum.config import storage_options
from ringsum.core.window import RollingSum
from ringsum.storage import DataDirInUse, KeyLimitReached, StorageUnavailable, file_header
from ringsum.storage.checkpoint import save
from ringsum.storage.datadir import DataDir
from ringsum.storage.memory import MemoryStorage
from ringsum.web import state

START = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)
START_US = int(START.timestamp()) * 1_000_000
MINUTE_US = 60_000_000


def listed_after_restart(clock: ManualClock, **settings: str) -> list[tuple[str, int]]:
    """The keys a storage started on ``settings`` lists, then closed again."""
    storage = memory_storage(clock, **settings)
    try:
        return storage.keys().metrics
    finally:
        storage.close()


def write_snapshot(directory, keys: dict[str, list[tuple[int, int]]], window_us: int = 3_600_000_000) -> None:
    """A snapshot in ``directory`` holding ``keys`` (time_us, value) entries, as a checkpoint writes it."""
    sums = {}
    for key, entries in keys.items():
        rolling = sums[key] = RollingSum(window_us, 1)
        for time_us, value in entries:
            rolling.add(value, time_us)
    data_dir = DataDir(directory)
    try:
        save(data_dir, 0, sums)
    finally:
        data_dir.release()


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
    storage, client = state.storage(app), app.test_client()
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
    minute = 60_000_000
    entries = {"late": [(START_US - minute, 1), (START_US - 10_000_000, 2)], "early": [(START_US - 50_000_000, 3)]}
    write_snapshot(tmp_path, entries)
    clock = ManualClock(START_US)
    storage = memory_storage(clock, RINGSUM_WINDOW="1m", RINGSUM_DATA_DIR=str(tmp_path))
    try:
        clock.now_us = START_US + 15_000_000  # "early" aged out; "late" holds its newer value
        storage.sweep()
        assert storage.stats().keys == 1  # (stats() ages nothing out by itself)
        assert storage.keys("").metrics == [("late", 2)]
    finally:
        storage.close()


def test_the_background_sweep_runs_about_once_a_second(make_memory_app) -> None:
    storage = state.storage(make_memory_app(RINGSUM_WINDOW="1m"))
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
    storage, client = state.storage(app), app.test_client()
    for n in range(1000):
        assert client.get(f"/metric/never{n}/sum").get_json() == {"value": 0}
    assert storage.stats().keys == 0
    assert storage.total("never1") == 0 and storage.keys().metrics == []
    assert storage.stats().keys == 0


def test_concurrent_records_sweeps_and_checkpoints_lose_nothing(tmp_path) -> None:
    clock = ManualClock(START_US)
    storage = memory_storage(clock, RINGSUM_DATA_DIR=str(tmp_path))
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
        storage.checkpoint()  # a log rotation and a fold, while writers write
    for worker in workers:
        worker.join()
    try:
        assert storage.total("shared") == threads * per_thread
        assert all(storage.total(f"own{i}") == sum(range(per_thread)) for i in range(threads))
    finally:
        storage.close()
    again = memory_storage(clock, RINGSUM_DATA_DIR=str(tmp_path))
    try:
        assert again.total("shared") == threads * per_thread
        assert all(again.total(f"own{i}") == sum(range(per_thread)) for i in range(threads))
    finally:
        again.close()


# -- the data dir ------------------------------------------------------------------


def test_a_restart_restores_what_is_still_in_the_window_and_drops_what_aged_out(tmp_path, caplog) -> None:
    clock = ManualClock(START_US)
    first = memory_storage(clock, RINGSUM_WINDOW="1h", RINGSUM_DATA_DIR=str(tmp_path))
    first.record("old", 4)
    clock.now_us += 30 * MINUTE_US
    first.record_many([("kept", 3), ("old", 1)])
    first.record("gone", 9)
    first.delete("gone")
    first.close()

    clock.now_us += 30 * MINUTE_US + 1_000_000  # down 30 min: the first "old" value has aged out
    with caplog.at_level(logging.INFO):
        second = memory_storage(clock, RINGSUM_WINDOW="1h", RINGSUM_DATA_DIR=str(tmp_path))
    try:
        assert second.total("kept") == 3 and second.total("old") == 1 and second.total("gone") == 0
        assert second.stats().keys == 2
        assert "restored 2 keys and 2 entries" in caplog.text and "4 log records replayed" in caplog.text
        clock.now_us += 30 * MINUTE_US
        assert second.total("kept") == 0
    finally:
        second.close()


@pytest.mark.parametrize("resolution, slot_us", [("0", 1), ("1s", 1_000_000)], ids=["exact", "tick"])
def test_a_restored_value_stays_in_the_slot_it_was_recorded_in(tmp_path, resolution: str, slot_us: int) -> None:
    recorded_at = START_US + 123_456
    clock = ManualClock(recorded_at)
    storage = memory_storage(clock, RINGSUM_WINDOW="1m", RINGSUM_RESOLUTION=resolution, RINGSUM_DATA_DIR=str(tmp_path))
    storage.record("k", 5)
    storage.close()
    last_counted = (recorded_at // slot_us) * slot_us + MINUTE_US + slot_us - 1  # docs/api.md#tick-mode
    for now, expected in [(last_counted, 5), (last_counted + 1, 0)]:
        clock.now_us = now
        again = memory_storage(
            clock, RINGSUM_WINDOW="1m", RINGSUM_RESOLUTION=resolution, RINGSUM_DATA_DIR=str(tmp_path)
        )
        try:
            assert again.total("k") == expected, now - recorded_at
        finally:
            again.close()


def test_a_new_data_dir_says_so(tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO):
        storage = memory_storage(ManualClock(START_US), RINGSUM_DATA_DIR=str(tmp_path / "fresh"))
    storage.close()
    assert "new data dir" in caplog.text and "restored" not in caplog.text


def test_a_write_the_log_cannot_take_is_refused_and_not_applied(tmp_path) -> None:
    """/dev/full in place of the log file: every write() fails with ENOSPC, as on a full disk."""
    clock = ManualClock(START_US)
    storage = memory_storage(clock, RINGSUM_DATA_DIR=str(tmp_path))
    storage.record("k", 1)
    log_fd = storage._persistence._journal._fd
    saved = os.dup(log_fd)
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, log_fd)
        with pytest.raises(StorageUnavailable, match="No space left on device"):
            storage.record("k", 10)
        with pytest.raises(StorageUnavailable):
            storage.record_many([("k", 100), ("new", 1)])
        with pytest.raises(StorageUnavailable):
            storage.delete("k")
        assert storage.total("k") == 1 and storage.total("new") == 0 and storage.stats().keys == 1
        os.dup2(saved, log_fd)  # space again
        storage.record("k", 1000)
    finally:
        os.close(full)
        os.close(saved)
        storage.close()
    again = memory_storage(clock, RINGSUM_DATA_DIR=str(tmp_path))
    try:
        assert again.total("k") == 1001 and again.total("new") == 0
    finally:
        again.close()


def test_writes_refused_for_the_key_limit_are_not_logged(tmp_path) -> None:
    clock = ManualClock(START_US)
    storage = memory_storage(clock, RINGSUM_MAX_KEYS="2", RINGSUM_DATA_DIR=str(tmp_path))
    storage.record_many([("a", 1), ("b", 2)])
    with pytest.raises(KeyLimitReached):
        storage.record("c", 3)
    storage.close()
    assert listed_after_restart(clock, RINGSUM_MAX_KEYS="2", RINGSUM_DATA_DIR=str(tmp_path)) == [("a", 1), ("b", 2)]


def test_a_lower_key_limit_at_restart_keeps_the_newest_keys(tmp_path) -> None:
    clock = ManualClock(START_US)
    storage = memory_storage(clock, RINGSUM_DATA_DIR=str(tmp_path))
    for n in range(5):
        storage.record(f"k{n}", n)
        clock.now_us += 1_000_000
    storage.close()
    again = memory_storage(clock, RINGSUM_MAX_KEYS="2", RINGSUM_DATA_DIR=str(tmp_path))
    again.close()
    # ... and the files say so from then on.
    assert listed_after_restart(clock, RINGSUM_DATA_DIR=str(tmp_path)) == [("k3", 3), ("k4", 4)]


def test_a_checkpoint_folds_the_log_into_a_snapshot_that_restores_the_same(tmp_path) -> None:
    clock = ManualClock(START_US)
    storage = memory_storage(clock, RINGSUM_WINDOW="1m", RINGSUM_RESOLUTION="0", RINGSUM_DATA_DIR=str(tmp_path))
    storage.record("early", 1)
    clock.now_us += 30_000_000
    for n in range(100):
        storage.record_many([(f"k{n % 7}", n), ("all", 1)])
        clock.now_us += 17
    storage.delete("k3")
    clock.now_us += 31_000_000  # "early" ages out before the fold
    storage.checkpoint()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LOCK", "journal-0000000002.log", "snapshot"]
    storage.record("after", 2)
    expected = {key: storage.total(key) for key in ["early", "all", "after", *(f"k{n}" for n in range(7))]}
    storage.close()
    again = memory_storage(clock, RINGSUM_WINDOW="1m", RINGSUM_RESOLUTION="0", RINGSUM_DATA_DIR=str(tmp_path))
    try:
        assert {key: again.total(key) for key in expected} == expected
        assert expected["all"] == 100 and expected["k3"] == 0 and expected["early"] == 0
        kept_k_values = sum(1 for n in range(100) if n % 7 != 3)  # exact mode: one entry per value
        assert again.stats().entries == kept_k_values + 100 + 1
    finally:
        again.close()


def test_a_second_storage_on_the_same_data_dir_is_refused_until_the_first_closes(tmp_path) -> None:
    first = memory_storage(ManualClock(START_US), RINGSUM_DATA_DIR=str(tmp_path))
    with pytest.raises(DataDirInUse, match=str(tmp_path)):
        memory_storage(ManualClock(START_US), RINGSUM_DATA_DIR=str(tmp_path))
    first.record("k", 1)
    threading.Timer(0.2, first.close).start()
    options = storage_options(data_dir=str(tmp_path))
    second = MemoryStorage(options, clock=ManualClock(START_US), lock_timeout_s=10)  # as a reload's new worker
    try:
        assert second.total("k") == 1
    finally:
        second.close()


def test_a_damaged_snapshot_is_set_aside_and_its_whole_keys_kept(tmp_path, caplog) -> None:
    write_snapshot(tmp_path, {"a": [(START_US, 1)], "b": [(START_US, 2)]})
    whole = (tmp_path / "snapshot").read_bytes()
    (tmp_path / "snapshot").write_bytes(whole[:-30])  # the end record and part of "b"
    with caplog.at_level(logging.WARNING):
        storage = memory_storage(ManualClock(START_US), RINGSUM_DATA_DIR=str(tmp_path))
    try:
        assert storage.keys().metrics == [("a", 1)]
        assert (tmp_path / "snapshot.damaged").read_bytes() == whole[:-30]
        assert [r.levelname for r in caplog.records].count("WARNING") == 1
        assert "snapshot.damaged" in caplog.text and storage.stats().damaged_files == 1
    finally:
        storage.close()
    again = memory_storage(ManualClock(START_US), RINGSUM_DATA_DIR=str(tmp_path))  # no warning the second time
    try:
        assert again.keys().metrics == [("a", 1)]
    finally:
        again.close()


def test_a_torn_log_tail_is_cut_off_so_new_records_never_follow_garbage(tmp_path, caplog) -> None:
    clock = ManualClock(START_US)
    storage = memory_storage(clock, RINGSUM_DATA_DIR=str(tmp_path))
    storage.record("k", 1)
    storage.record("k", 2)
    storage.close()
    segment = tmp_path / "journal-0000000001.log"
    segment.write_bytes(segment.read_bytes()[:-3] + b"\x00garbage")
    with caplog.at_level(logging.WARNING):
        again = memory_storage(clock, RINGSUM_DATA_DIR=str(tmp_path))
    again.record("k", 4)
    again.close()
    assert "journal-0000000001.log is damaged" in caplog.text
    third = memory_storage(clock, RINGSUM_DATA_DIR=str(tmp_path))
    try:
        assert third.total("k") == 5
    finally:
        third.close()


def test_damage_inside_a_log_segment_keeps_the_whole_file_aside_and_says_what_is_lost(tmp_path, caplog) -> None:
    clock = ManualClock(START_US)
    storage = memory_storage(clock, RINGSUM_DATA_DIR=str(tmp_path))
    for value in (1, 2, 4, 8):
        storage.record("k", value)
    storage.close()
    segment = tmp_path / "journal-0000000001.log"
    whole = bytearray(segment.read_bytes())
    header = file_header.SIZE
    record = (len(whole) - header) // 4  # the four records are alike: damage the second one
    whole[header + record + 20] ^= 0xFF
    segment.write_bytes(bytes(whole))
    with caplog.at_level(logging.INFO):
        again = memory_storage(clock, RINGSUM_DATA_DIR=str(tmp_path))
    try:
        assert again.total("k") == 1  # the records after the damaged one, in this segment, are lost
        assert (tmp_path / "journal-0000000001.log.damaged").read_bytes() == bytes(whole)  # never deleted
        assert segment.stat().st_size == header + record
        warning = next(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
        assert "journal-0000000001.log.damaged" in warning and f"lost the {3 * record} bytes" in warning
        assert "every record after it in this segment" in warning
        restored_line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("restored"))
        assert "damaged files kept aside" in restored_line and "journal-0000000001.log.damaged" in restored_line
        assert again.stats().damaged_files == 1
        again.record("k", 16)
    finally:
        again.close()
    segment.write_bytes(segment.read_bytes() + b"garbage")  # damaged again: a second copy, the first kept
    third = memory_storage(clock, RINGSUM_DATA_DIR=str(tmp_path))
    try:
        assert third.total("k") == 1 + 16  # the 16 is in the next segment: a damaged one never stops a later one
        assert third.stats().damaged_files == 2
        assert (tmp_path / "journal-0000000001.log.2.damaged").exists()
    finally:
        third.close()


def test_leftover_temporary_files_are_removed_at_start(tmp_path) -> None:
    (tmp_path / "snapshot.abc123.tmp").write_bytes(b"half a snapshot")
    memory_storage(ManualClock(START_US), RINGSUM_DATA_DIR=str(tmp_path)).close()
    assert not list(tmp_path.glob("*.tmp"))


def test_a_full_disk_answers_503_and_records_nothing(make_memory_app, tmp_path) -> None:
    app = make_memory_app(RINGSUM_DATA_DIR=str(tmp_path))
    client, log_fd = app.test_client(), state.storage(app)._persistence._journal._fd
    assert client.post("/metric/k", json={"value": 1}).status_code == 200
    saved, full = os.dup(log_fd), os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, log_fd)  # every write() now fails with ENOSPC
        refused = client.post("/metric/k", json={"value": 5})
        assert refused.status_code == 503 and refused.headers["Content-Type"] == "application/problem+json"
        assert "Retry-After" in refused.headers
        assert str(tmp_path) in refused.get_json()["detail"] and "No space left" in refused.get_json()["detail"]
        assert client.post("/metric", json=[{"key": "k", "value": 7}]).status_code == 503
        assert client.get("/metric/k/sum").get_json() == {"value": 1}
        not_ready = client.get("/readyz")  # a load balancer stops sending writes
        assert not_ready.status_code == 503 and str(tmp_path) in not_ready.get_json()["detail"]
        state.storage(app)._persistence._next_retry = 0
        state.storage(app)._persistence.watch()  # the probe the watch thread tries every second
        assert client.get("/readyz").status_code == 503
    finally:
        os.dup2(saved, log_fd)
        os.close(full)
        os.close(saved)
    state.storage(app)._persistence._next_retry = 0
    state.storage(app)._persistence.watch()
    assert client.get("/readyz").status_code == 200  # ready again without a write
    assert client.post("/metric/k", json={"value": 2}).status_code == 200
    assert client.get("/metric/k/sum").get_json() == {"value": 3}
