"""In-process storage: a dict of RollingSum behind one lock, a sweeper, a write-ahead log.

It lives in one process; several worker processes would each hold a different
part of the data, which is why serving with more than one needs Redis.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Self

from sortedcontainers import SortedList

from ..clock import now_us
from ..window import RollingSum
from . import journal
from .base import (
    Clock,
    DataDirError,
    FsyncMode,
    KeyLimitReached,
    KeyPage,
    Marker,
    Series,
    Storage,
    StorageOptions,
    StorageStats,
    StorageUnavailable,
)
from .checkpoint import load, save
from .datadir import DataDir
from .markers import Markers

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 1.0
SWEEP_SLICE = 500  # expired keys dropped per lock hold, so even a mass expiry never stalls requests for long
SWEEP_PAUSE_S = 0.001
LIST_SLICE = 500  # keys a listing reads per lock hold, so a 10,000-key page never stalls writers
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class MemoryStorage(Storage):
    single_process = True
    uses_data_dir = True

    @classmethod
    def open(cls, uri: str, options: StorageOptions, *, clock: Clock | None = None, lock_timeout_s: float = 0) -> Self:
        return cls(options, clock=clock, lock_timeout_s=lock_timeout_s)

    def __init__(self, options: StorageOptions, *, clock: Clock | None = None, lock_timeout_s: float = 0.0) -> None:
        """With a data dir, take its lock (waiting up to ``lock_timeout_s`` for a previous
        owner), then restore from it; DataDirInUse when another process holds it."""
        self._window_us = options.window_us
        self._resolution_us = options.resolution_us
        self._slot_us = options.slot_us
        self._max_keys = options.max_keys
        self._clock = clock or now_us
        # In the order each key last opened a slot, so expired keys gather at the front.
        self._sums: dict[str, RollingSum] = {}
        # Kept as long as the value they guard may count: the window and one tick.
        self._markers = Markers(options.window_us + options.slot_us, options.max_idempotency_keys)
        # The same keys in key order, so a listing page costs O(log n + page), not a sort.
        self._index: SortedList[str] = SortedList()
        self._lock = threading.Lock()
        self.evictions = 0  # entries aged out, for /metrics
        self.last_sweep_seconds = 0.0
        self.longest_checkpoint_hold_s = 0.0  # the lock held to rotate the log, for the benchmark
        self._stopping = threading.Event()
        self._data_dir: DataDir | None = None
        self._journal: journal.Journal | None = None
        self._fold: subprocess.Popen[bytes] | None = None
        self._checkpointer: threading.Thread | None = None
        self._checkpointing = threading.Lock()
        if options.data_dir is not None:
            self._data_dir = DataDir(options.data_dir, lock_timeout_s)
            try:
                self._restore(options.fsync)
            except OSError as error:  # unreadable or read-only: one line at start, not a traceback
                self._data_dir.release()
                raise DataDirError(f"cannot restore from the data dir {self._data_dir.path}: {error}") from error
            except BaseException:
                self._data_dir.release()
                raise
            self._checkpoint_s = options.checkpoint_us / 1_000_000
            self._checkpointer = threading.Thread(
                target=self._checkpoint_forever, name="ringsum-checkpoint", daemon=True
            )
            self._checkpointer.start()
        self._sweeper = threading.Thread(target=self._sweep_forever, name="ringsum-sweeper", daemon=True)
        self._sweeper.start()

    # -- the storage interface -------------------------------------------------

    def record(self, key: str, value: int, marker: Marker | None = None) -> Marker | None:
        now = self._clock()
        logged = journal.single(now, key, value, marker) if self._journal else None
        with self._lock:
            if marker is not None and (held := self._claim(marker, now)) is not None:
                return held
            rolling = self._sums.get(key)
            if rolling is None:
                self._make_room(1, now)
            self._log(logged)  # checked first, logged next, applied last: log order is apply order
            if rolling is None:
                rolling = self._sums[key] = self._new_sum()
                self._index.add(key)
            self._add(key, rolling, value, now)
            if marker is not None:
                self._markers.add(marker, now)
        return None

    def record_many(self, events: Sequence[tuple[str, int]], marker: Marker | None = None) -> Marker | None:
        now = self._clock()
        # One record, its marker inside: all or nothing on replay too.
        logged = journal.batch(now, events, marker) if self._journal else None
        with self._lock:
            if marker is not None and (held := self._claim(marker, now)) is not None:
                return held
            new_keys = {key for key, _ in events if key not in self._sums}
            self._make_room(len(new_keys), now)
            self._log(logged)
            for key in new_keys:
                self._sums[key] = self._new_sum()
            self._index.update(new_keys)
            for key, value in events:
                self._add(key, self._sums[key], value, now)
            if marker is not None:
                self._markers.add(marker, now)
        return None

    def total(self, key: str, window_us: int | None = None) -> int:
        now = self._clock()
        with self._lock:
            rolling = self._live(key, now)
            return rolling.total(now, window_us) if rolling else 0

    def series(self, key: str, step_us: int) -> Series:
        now = self._clock()
        with self._lock:
            rolling = self._live(key, now) or self._new_sum()
            start_us, sums = rolling.series(now, step_us)
        return Series(start_us, step_us, sums)

    def keys(self, prefix: str = "", limit: int = 1000, after: str = "") -> KeyPage:
        """Read the index a slice per lock hold: a page is not one snapshot anyway (a
        client pages over time), and the cursor keeps every key exactly once."""
        now = self._clock()
        found: list[tuple[str, int]] = []
        cursor: str | None = after
        # One key past the page tells whether a next page can hold anything.
        while cursor is not None and len(found) <= limit:
            with self._lock:
                cursor = self._list_slice(prefix, cursor, now, found, min(limit + 1 - len(found), LIST_SLICE))
        if len(found) > limit:
            return KeyPage(found[:limit], found[limit - 1][0])
        return KeyPage(found, None)

    def delete(self, key: str) -> None:
        logged = journal.delete(self._clock(), key) if self._journal else None
        with self._lock:
            self._log(logged)
            if key in self._sums:
                self._forget(key)

    def ping(self) -> None:
        """Memory is always there."""

    def stats(self) -> StorageStats:
        with self._lock:
            sums = list(self._sums.values())
        return StorageStats(
            keys=len(sums),
            entries=sum(map(len, sums)),
            evictions=self.evictions,
            sweep_seconds=self.last_sweep_seconds,
            idempotency_keys=len(self._markers),
        )

    def close(self) -> None:
        """Stop the background threads; fsync the log and let go of the data dir. Quick:
        the log holds every write already, so nothing else is written on the way out."""
        self._stopping.set()
        for thread in (self._sweeper, self._checkpointer):
            if thread is not None and thread.is_alive() and thread is not threading.current_thread():
                fold = self._fold
                if thread is self._checkpointer and fold is not None:
                    fold.terminate()  # its temporary file is removed at the next start
                thread.join()
        try:
            if self._journal is not None:
                with self._lock:
                    closing, self._journal = self._journal, None
                    closing.close()
        finally:
            if self._data_dir is not None:
                self._data_dir.release()
                self._data_dir = None

    # -- ageing out ------------------------------------------------------------

    def sweep(self) -> None:
        """Drop every key whose values have all aged out, a slice at a time.

        Keys are held in the order their newest slot was opened, so the expired ones
        are at the front: a sweep reads only those, plus the first live key, whatever
        the number of live keys.
        """
        started = time.perf_counter()
        now = self._clock()
        while True:
            with self._lock:
                dropped = self._drop_expired(now, SWEEP_SLICE)
                dropped = max(dropped, self._markers.drop_expired(now, SWEEP_SLICE))
                if dropped < SWEEP_SLICE:
                    break
            # Between slices, hand the GIL to request threads: without a pause this
            # thread takes it straight back and requests wait whole switch intervals.
            time.sleep(SWEEP_PAUSE_S)
        self.last_sweep_seconds = time.perf_counter() - started

    def _sweep_forever(self) -> None:
        while not self._stopping.wait(SWEEP_INTERVAL_S):
            try:
                self.sweep()
            except Exception:  # a sweep must never kill the thread that frees memory
                log.exception("sweep failed")

    def _live(self, key: str, now: int) -> RollingSum | None:
        """The key's sum after ageing out, or None (and forgotten) when nothing is left.
        Call with the lock held."""
        rolling = self._sums.get(key)
        if rolling is None:
            return None
        self.evictions += rolling.evict(now)
        if not rolling:
            self._forget(key)
            return None
        return rolling

    def _list_slice(self, prefix: str, after: str, now: int, found: list[tuple[str, int]], most: int) -> str | None:
        """Append live keys starting with ``prefix`` and sorting after ``after`` to
        ``found``, looking at ``most`` keys at most; forget the expired ones met. Returns
        the last key looked at, or None when no key can follow. Call with the lock held."""
        start = self._index.bisect_right(after) if after >= prefix else self._index.bisect_left(prefix)
        looked_at: list[str] = []
        for key in self._index.islice(start, start + most):
            if not key.startswith(prefix):
                break
            looked_at.append(key)
            rolling = self._sums[key]
            self.evictions += rolling.evict(now)
            if rolling:
                found.append((key, rolling.total(now)))
        for key in looked_at:  # expired since the last sweep: not listed, and forgotten
            if not self._sums[key]:
                self._forget(key)
        return looked_at[-1] if len(looked_at) == most else None

    def _forget(self, key: str) -> RollingSum:
        """Drop a held key from the dict and the index. Call with the lock held."""
        self._index.remove(key)
        return self._sums.pop(key)

    def _expires_last(self, key: str) -> None:
        """Move ``key`` to the end of the dict: its newest slot is now the newest of all.
        (If the wall clock steps back, order is off by at most that step, which only
        delays a sweep, never drops a live key.) Call with the lock held."""
        self._sums[key] = self._sums.pop(key)

    def _drop_expired(self, now: int, most: int | None = None) -> int:
        """Forget up to ``most`` keys from the front whose values all aged out; stop at
        the first live one. Returns how many were dropped. Call with the lock held."""
        expired = []
        for key, rolling in self._sums.items():
            if not rolling.expired(now) or len(expired) == most:
                break
            expired.append(key)
        for key in expired:
            self.evictions += len(self._forget(key))
        return len(expired)

    def _claim(self, marker: Marker, now: int) -> Marker | None:
        """The marker held under ``marker.id`` (the write is a retry: record nothing),
        or None after checking there is room to remember ``marker`` once the write is
        done. Call with the lock held, in the same hold as the write."""
        held = self._markers.find(marker, now)
        if held is None:
            self._markers.make_room(now)
        return held

    def _make_room(self, new_keys: int, now: int) -> None:
        """Raise KeyLimitReached unless ``new_keys`` more keys fit; keys that aged out
        since the last sweep are dropped first, so they do not count."""
        if len(self._sums) + new_keys <= self._max_keys:
            return
        self._drop_expired(now)
        if len(self._sums) + new_keys > self._max_keys:
            raise KeyLimitReached(f"{self._max_keys} live keys are held already (RINGSUM_MAX_KEYS)")

    def _add(self, key: str, rolling: RollingSum, value: int, now: int) -> None:
        """Age ``rolling`` out, then add; a key that opened a slot moves to the back of
        the expiry order. Call with the lock held."""
        self.evictions += rolling.evict(now)
        if rolling.add(value, now):
            self._expires_last(key)

    def _new_sum(self) -> RollingSum:
        return RollingSum(self._window_us, self._resolution_us)

    # -- the data dir ----------------------------------------------------------

    def _log(self, frame: bytes | None) -> None:
        """Append a write to the log before it is applied. Call with the lock held."""
        if frame is None:
            return
        if self._journal is None:
            raise StorageUnavailable("the storage is closing; nothing was recorded")
        self._journal.append(frame)

    def _restore(self, fsync: FsyncMode) -> None:
        """Snapshot plus log, replayed at their own times; what aged out while down is
        dropped. Then a new log segment is opened for this run's writes."""
        data_dir = self._data_dir
        started = time.perf_counter()
        leftovers = data_dir.remove_temporary_files()
        if leftovers:
            log.info("removed %s, left by a checkpoint a crash cut short", ", ".join(leftovers))
        new = not data_dir.snapshot.exists() and not data_dir.segments()
        restored = load(
            data_dir, self._window_us, self._resolution_us, self._clock(), max_keys=self._max_keys, repair=True
        )
        self._sums = restored.sums
        self._index.update(self._sums)
        for expires, marker in restored.markers:  # all of them, even past the cap: none is forgotten early
            self._markers.restore(marker, expires)
        if restored.differs_from_files:  # so that later checkpoints fold from what is held
            save(data_dir, restored.last_sequence, self._sums, restored.markers)
        self._journal = journal.Journal(data_dir.path, restored.last_sequence + 1, fsync, data_dir.segment)
        if new:
            log.info("new data dir %s: nothing to restore (fsync %s)", data_dir.path, fsync.value)
            return
        log.info(
            "restored %d keys and %d entries from %s (%d log records replayed, %d idempotency keys) in %.2fs "
            "(fsync %s)",
            len(self._sums),
            sum(map(len, self._sums.values())),
            data_dir.path,
            restored.records,
            len(self._markers),
            time.perf_counter() - started,
            fsync.value,
        )

    def checkpoint(self) -> None:
        """Fold the log into a new snapshot, so the log stays about one interval long.

        Only the rotation to a new log segment holds the lock (a file create); the fold
        runs in a child process, off this process's lock and GIL.
        """
        with self._checkpointing:  # one at a time, whoever asks
            self._checkpoint()

    def _checkpoint(self) -> None:
        started = time.perf_counter()
        with self._lock:
            if self._journal is None or not self._journal.has_records:
                return
            closed = self._journal.rotate()
            now = self._clock()
        self.longest_checkpoint_hold_s = max(self.longest_checkpoint_hold_s, time.perf_counter() - started)
        self._journal.seal_closed()
        command = [
            sys.executable,
            "-m",
            "ringsum.storage.checkpoint",
            str(self._data_dir.path),
            str(closed),
            f"--window-us={self._window_us}",
            f"--resolution-us={self._resolution_us}",
            f"--now-us={now}",
            f"--parent-pid={os.getpid()}",
        ]
        path = os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
        fold = self._fold = subprocess.Popen(
            command, env={**os.environ, "PYTHONPATH": path}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        _, error = fold.communicate()
        self._fold = None
        if fold.returncode and not self._stopping.is_set():
            reason = error.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {fold.returncode}"]
            log.warning("checkpoint failed, the log is kept and folded next time: %s", reason[0])

    def _checkpoint_forever(self) -> None:
        while not self._stopping.wait(self._checkpoint_s):
            try:
                self.checkpoint()
            except OSError as error:  # a failed checkpoint only leaves a longer log
                log.warning("checkpoint failed, the log is kept and folded next time: %s", error)
            except Exception:
                log.exception("checkpoint failed")
