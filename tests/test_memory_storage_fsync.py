"""The journal never pretends (docs/api.md#durability): a failed fsync stops acknowledging writes until
durability is re-established from memory, never a silent retry; with
``RINGSUM_FSYNC=always`` concurrent writers share fsyncs, and every answer leaves only once
its record is on the disk (checked by a simulated power loss: each log segment cut back
to what its last fsync covered)."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers import ManualClock, assert_problem, crash, in_threads, memory_storage

from ringsum import create_app
from ringsum.core.clock import now_us
from ringsum.http.edge import Edge, EdgeLimits
from ringsum.storage import NotDurable, journal_writer, persistence
from ringsum.storage.memory import MemoryStorage
from ringsum.web import state

T0 = 1_780_000_000_000_000


class Disk:
    """os.fsync and os.fdatasync that fail with EIO while ``failing``, counted; and what
    each fsync made durable, so a power loss can be played: every file cut back to its
    size at its last fsync."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.failing = False
        self.calls = 0
        self.durable: dict[tuple[int, int], int] = {}  # (device, inode) -> size at its last successful fsync
        self._lock = threading.Lock()
        real = os.fsync

        def sync(fd: int) -> None:
            with self._lock:
                self.calls += 1
                failing = self.failing
            if failing:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            found = os.fstat(fd)
            real(fd)
            with self._lock:
                self.durable[found.st_dev, found.st_ino] = found.st_size

        monkeypatch.setattr(os, "fsync", sync)
        monkeypatch.setattr(os, "fdatasync", sync)
        monkeypatch.setattr(journal_writer, "_sync_data", sync)

    def lose_power(self, data_dir: Path) -> None:
        """Cut every log segment back to what its last fsync covered (nothing if none did)."""
        for segment in data_dir.glob("journal-*.log"):
            found = segment.stat()
            os.truncate(segment, min(found.st_size, self.durable.get((found.st_dev, found.st_ino), 0)))

    def synced(self, path: Path) -> int:
        found = path.stat()
        return self.durable.get((found.st_dev, found.st_ino), 0)


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Disk:
    monkeypatch.setattr(journal_writer, "EVERY_SECOND_S", 0.02)  # the everysec thread, sooner
    monkeypatch.setattr(persistence, "RETRY_INTERVAL_S", 3600)  # coming back only when a test asks
    return Disk(monkeypatch)


def wait_for(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def recorded_then_failing(make_memory_app, tmp_path: Path, disk: Disk, fsync: str) -> tuple[Any, MemoryStorage]:
    """An app (its test client and storage) on ``tmp_path`` that recorded 1 for k, then
    whose disk began to fail."""
    app = make_memory_app(RINGSUM_DATA_DIR=str(tmp_path), RINGSUM_FSYNC=fsync)
    client = app.test_client()
    assert client.post("/metric/k", json={"value": 1}).status_code == 200
    disk.failing = True
    return client, state.storage(app)


def test_a_failed_everysec_fsync_refuses_writes_and_readiness_until_durability_is_back(
    make_memory_app, tmp_path, disk: Disk
) -> None:
    client, storage = recorded_then_failing(make_memory_app, tmp_path, disk, "everysec")
    assert client.post("/metric/k", json={"value": 2}).status_code == 200  # acknowledged before the fsync
    wait_for(lambda: storage._persistence.problem is not None, "the fsync thread to fail")
    calls = disk.calls

    refused = client.post("/metric/k", json={"value": 4})
    assert_problem(refused, 503, str(tmp_path), "fsync", "nothing was recorded")
    assert refused.headers["Retry-After"] == "1"
    assert_problem(client.post("/metric", json=[{"key": "k", "value": 8}]), 503, str(tmp_path))
    assert_problem(client.delete("/metric/k"), 503, str(tmp_path))
    assert_problem(client.get("/readyz"), 503, str(tmp_path), "fsync")
    assert client.get("/metric/k/sum").get_json() == {"value": 3}  # reads go on; nothing refused was applied

    disk.failing = False  # the disk is back, but the failed fsync is not retried as if the data were safe
    time.sleep(0.1)  # five everysec periods
    assert disk.calls == calls
    assert client.post("/metric/k", json={"value": 16}).status_code == 503
    assert client.get("/readyz").status_code == 503

    assert storage._persistence.reestablish()  # what the watch thread does every second
    assert client.get("/readyz").status_code == 200
    assert client.post("/metric/k", json={"value": 32}).status_code == 200
    assert sorted(path.name for path in tmp_path.iterdir()) == ["LOCK", "journal-0000000002.log", "snapshot"]
    segment = tmp_path / "journal-0000000002.log"
    wait_for(lambda: disk.synced(segment) == segment.stat().st_size, "the next everysec fsync")

    crash(storage)
    disk.lose_power(tmp_path)  # the second value was never fsynced in the log: the snapshot holds it
    again = memory_storage(ManualClock(T0), RINGSUM_DATA_DIR=str(tmp_path))
    try:
        assert again.total("k") == 1 + 2 + 32
    finally:
        again.close()


def test_with_always_a_write_whose_fsync_fails_is_not_acknowledged_and_its_retry_counts_once(
    make_memory_app, tmp_path, disk: Disk
) -> None:
    client, storage = recorded_then_failing(make_memory_app, tmp_path, disk, "always")
    retry = {"Idempotency-Key": "write-2"}
    in_doubt = client.post("/metric/k", json={"value": 2}, headers=retry)
    assert_problem(in_doubt, 503, str(tmp_path), "held in memory", "same Idempotency-Key")
    assert_problem(client.post("/metric/k", json={"value": 4}), 503, "nothing was recorded")
    assert_problem(client.get("/readyz"), 503, str(tmp_path))
    assert not storage._persistence.reestablish()  # the disk still fails: a new snapshot cannot be fsynced
    assert not list(tmp_path.glob("*.tmp"))

    disk.failing = False
    assert storage._persistence.reestablish()
    replayed = client.post("/metric/k", json={"value": 2}, headers=retry)
    assert replayed.status_code == 200 and replayed.headers.get("Idempotent-Replayed") == "true"
    assert client.get("/metric/k/sum").get_json() == {"value": 3}  # counted once

    crash(storage)
    disk.lose_power(tmp_path)
    again = memory_storage(ManualClock(T0), RINGSUM_DATA_DIR=str(tmp_path))
    try:
        assert again.total("k") == 3
    finally:
        again.close()


def test_durability_comes_back_on_its_own_within_seconds(make_memory_app, tmp_path, disk: Disk, monkeypatch) -> None:
    monkeypatch.setattr(persistence, "RETRY_INTERVAL_S", 0.2)
    app = make_memory_app(RINGSUM_DATA_DIR=str(tmp_path), RINGSUM_FSYNC="always")
    client = app.test_client()
    disk.failing = True
    assert client.post("/metric/k", json={"value": 1}).status_code == 503
    time.sleep(0.5)  # a few tries, failing
    assert client.get("/readyz").status_code == 503
    disk.failing = False
    wait_for(lambda: client.get("/readyz").status_code == 200, "durability to be re-established", timeout=5)
    assert client.post("/metric/k", json={"value": 2}).status_code == 200


def test_with_always_concurrent_writers_share_fsyncs_and_survive_a_power_loss(tmp_path, disk: Disk) -> None:
    clock = ManualClock(T0)
    storage = memory_storage(clock, RINGSUM_DATA_DIR=str(tmp_path), RINGSUM_FSYNC="always")
    threads, per_thread = 8, 100
    slow_sync = disk_sync = journal_writer._sync_data

    def slow(fd: int) -> None:  # a disk slow enough for writers to pile up behind an fsync
        time.sleep(0.002)
        disk_sync(fd)

    journal_writer._sync_data = slow
    acknowledged = [0] * threads
    go = threading.Barrier(threads)

    def writer(index: int) -> None:
        go.wait()
        for _ in range(per_thread):
            storage.record(f"k{index}", 1)
            acknowledged[index] += 1

    try:
        in_threads(writer, threads)
    finally:
        journal_writer._sync_data = slow_sync
    writes = threads * per_thread
    assert disk.calls < writes / 2, f"{disk.calls} fsyncs for {writes} writes"
    assert totals_after_power_loss(storage, disk, tmp_path, clock, threads) == acknowledged


def test_an_idempotent_retry_answered_again_waits_for_the_disk_too(tmp_path, disk: Disk) -> None:
    """Its first answer may still be waiting for its fsync: a replay must not vouch first."""
    from ringsum.storage import Marker

    storage = memory_storage(ManualClock(T0), RINGSUM_DATA_DIR=str(tmp_path), RINGSUM_FSYNC="always")
    marker = Marker("once", bytes(32), 200, b"{}")
    try:
        assert storage.record("k", 1, marker) is None
        disk.failing = True
        storage._persistence._journal.fail("fsync of the log failed: injected")
        with pytest.raises(NotDurable):
            storage.record("k", 1, marker)
    finally:
        disk.failing = False
        storage.close()


def test_the_edge_answers_a_turn_of_writes_after_one_fsync_and_a_power_loss_keeps_them(tmp_path, disk: Disk) -> None:
    """The edge holds the answers of every write read in one turn of its loop, fsyncs
    once, then lets them go: eight clients, far fewer fsyncs than writes, and every
    acknowledged value is in what the fsyncs covered."""
    app = create_app({"RINGSUM_STORAGE_URI": "memory://", "RINGSUM_DATA_DIR": str(tmp_path), "RINGSUM_FSYNC": "always"})
    edge = Edge(app, EdgeLimits(max_body=1 << 20, read_timeout_s=10, idle_timeout_s=10))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    loop = asyncio.new_event_loop()
    stopping = asyncio.Event()
    serving = threading.Thread(target=loop.run_until_complete, args=(edge.serve(sock, stopping, 5),))
    serving.start()
    clients, per_client = 8, 60
    acknowledged = [0] * clients

    def client(index: int) -> None:
        with requests.Session() as session:
            for _ in range(per_client):
                if session.post(f"{url}/metric/k{index}", json={"value": 1}, timeout=10).status_code == 200:
                    acknowledged[index] += 1

    try:
        in_threads(client, clients)
    finally:
        loop.call_soon_threadsafe(stopping.set)
        serving.join()
        loop.close()
        sock.close()
    writes = clients * per_client
    assert sum(acknowledged) == writes
    assert disk.calls < writes / 2, f"{disk.calls} fsyncs for {writes} writes"
    assert totals_after_power_loss(state.storage(app), disk, tmp_path, now_us, clients) == acknowledged


def totals_after_power_loss(
    storage: MemoryStorage, disk: Disk, data_dir: Path, clock: Callable[[], int], keys: int
) -> list[int]:
    """Crash ``storage``, lose what was never fsynced, restore: the totals of k0, k1..."""
    crash(storage)
    disk.lose_power(data_dir)
    again = memory_storage(clock, RINGSUM_DATA_DIR=str(data_dir))
    try:
        return [again.total(f"k{index}") for index in range(keys)]
    finally:
        again.close()
