"""In-process storage: a dict of RollingSum behind one lock, a sweeper, a write-ahead log.

It lives in one process; several worker processes would each hold a different
part of the data, which is why serving with more than one needs Redis.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Self

from sortedcontainers import SortedList

from ..core.clock import WindowClock
from ..core.pending import hold_answer
from ..core.window import RollingSum
from . import journal
from .base import (
    Clock,
    KeyLimitReached,
    KeyPage,
    Marker,
    Series,
    Storage,
    StorageOptions,
    StorageStats,
    WindowStats,
)
from .journal_writer import Commit
from .markers import Markers
from .persistence import Held, Persistence

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 1.0
SWEEP_SLICE = 500  # expired keys dropped per lock hold, so even a mass expiry never stalls requests for long
SWEEP_PAUSE_S = 0.001
LIST_SLICE = 500  # keys a listing reads per lock hold, so a 10,000-key page never stalls writers


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
        # The window's time never steps back, whatever the wall clock does (clock.py).
        self._clock = WindowClock.of(clock)
        # In the order each key last opened a slot, so expired keys gather at the front.
        self._sums: dict[str, RollingSum] = {}
        # Kept as long as the value they guard may count: the window and one tick.
        self._markers = Markers(options.window_us + options.slot_us, options.max_idempotency_keys)
        # The same keys in key order, so a listing page costs O(log n + page), not a sort.
        self._index: SortedList[str] = SortedList()
        self._lock = threading.Lock()
        self.evictions = 0  # entries aged out, for /metrics
        self.last_sweep_seconds = 0.0
        self._stopping = threading.Event()
        self._persistence: Persistence | None = None
        if options.data_dir is not None:
            self._persistence = Persistence(options, self._lock, self._clock, lock_timeout_s)
            restored = self._persistence.restore(self._max_keys)
            self._sums = restored.sums
            self._index.update(self._sums)
            for expires, marker in restored.markers:  # all of them, even past the cap: none is forgotten early
                self._markers.restore(marker, expires)
            self._persistence.start(self._held)
        self._sweeper = threading.Thread(target=self._sweep_forever, name="ringsum-sweeper", daemon=True)
        self._sweeper.start()

    # -- the storage interface -------------------------------------------------

    def record(self, key: str, value: int, marker: Marker | None = None) -> Marker | None:
        now = self._now()
        logged = journal.single(now, key, value, marker) if self._persistence else None
        with self._lock:
            held = self._claim(marker, now) if marker is not None else None
            if held is not None:
                commit = self._replayed()
            else:
                rolling = self._sums.get(key)
                if rolling is None:
                    self._make_room(1, now)
                commit = self._log(logged)  # checked first, logged next, applied last: log order is apply order
                if rolling is None:
                    rolling = self._sums[key] = self._new_sum()
                    self._index.add(key)
                self._add(key, rolling, value, now)
                if marker is not None:
                    self._markers.add(marker, now)
        if commit is not None:
            hold_answer(commit)  # RINGSUM_FSYNC=always: the answer waits for the disk, outside the lock
        return held

    def record_many(self, events: Sequence[tuple[str, int]], marker: Marker | None = None) -> Marker | None:
        now = self._now()
        # One record, its marker inside: all or nothing on replay too.
        logged = journal.batch(now, events, marker) if self._persistence else None
        with self._lock:
            held = self._claim(marker, now) if marker is not None else None
            if held is not None:
                commit = self._replayed()
            else:
                new_keys = {key for key, _ in events if key not in self._sums}
                self._make_room(len(new_keys), now)
                commit = self._log(logged)
                for key in new_keys:
                    self._sums[key] = self._new_sum()
                self._index.update(new_keys)
                for key, value in events:
                    self._add(key, self._sums[key], value, now)
                if marker is not None:
                    self._markers.add(marker, now)
        if commit is not None:
            hold_answer(commit)
        return held

    def total(self, key: str, window_us: int | None = None) -> int:
        now = self._now()
        with self._lock:
            rolling = self._live(key, now)
            return rolling.total(now, window_us) if rolling else 0

    def window_stats(self, key: str, window_us: int | None = None) -> WindowStats:
        now = self._now()
        with self._lock:
            rolling = self._live(key, now)
            return WindowStats(*rolling.stats(now, window_us)) if rolling else WindowStats(0, 0)

    def series(self, key: str, step_us: int, with_counts: bool = False) -> Series:
        now = self._now()
        with self._lock:
            rolling = self._live(key, now) or self._new_sum()
            start_us, sums, counts = rolling.series(now, step_us, with_counts)
        return Series(start_us, step_us, sums, counts)

    def keys(self, prefix: str = "", limit: int = 1000, after: str = "") -> KeyPage:
        """Read the index a slice per lock hold: a page is not one snapshot anyway (a
        client pages over time), and the cursor keeps every key exactly once."""
        now = self._now()
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
        logged = journal.delete(self._now(), key) if self._persistence else None
        with self._lock:
            commit = self._log(logged)
            if key in self._sums:
                self._forget(key)
        if commit is not None:
            hold_answer(commit)

    def ping(self) -> None:
        """Memory is always there; NotDurable while the data dir cannot be trusted with
        a write (so /readyz says not ready)."""
        if self._persistence is not None:
            self._persistence.check()

    def stats(self) -> StorageStats:
        with self._lock:
            sums = list(self._sums.values())
        return StorageStats(
            keys=len(sums),
            entries=sum(map(len, sums)),
            evictions=self.evictions,
            sweep_seconds=self.last_sweep_seconds,
            idempotency_keys=len(self._markers),
            durable=None if self._persistence is None else self._persistence.problem is None,
            damaged_files=None if self._persistence is None else self._persistence.damaged_files(),
        )

    def close(self) -> None:
        """Stop the background threads; fsync the log and let go of the data dir. Quick:
        the log holds every write already, so nothing else is written on the way out."""
        self._stopping.set()
        if self._sweeper.is_alive() and self._sweeper is not threading.current_thread():
            self._sweeper.join()
        if self._persistence is not None:
            self._persistence.close()

    def _now(self) -> int:
        """The window's clock; with a data dir, logged when a restart could not tell it
        (after a wall-clock step; see Persistence.keep_clock)."""
        now = self._clock()
        if self._persistence is not None:
            self._persistence.keep_clock(now)
        return now

    # -- ageing out ------------------------------------------------------------

    def sweep(self) -> None:
        """Drop every key whose values have all aged out, a slice at a time.

        Keys are held in the order their newest slot was opened, so the expired ones
        are at the front: a sweep reads only those, plus the first live key, whatever
        the number of live keys.
        """
        started = time.perf_counter()
        now = self._now()
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
        (The window's clock never steps back, so this is expiry order.) Call with the
        lock held."""
        self._sums[key] = self._sums.pop(key)

    def _drop_expired(self, now: int, most: int | None = None) -> int:
        """Forget up to ``most`` keys from the front whose values all aged out; stop at
        the first live one. Returns how many were dropped. Call with the lock held."""
        expired: list[str] = []
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

    def _log(self, frame: bytes | None) -> Commit | None:
        """Append a write to the log before it is applied; with ``always``, what its
        answer waits for. Call with the lock held."""
        return None if frame is None else self._persistence.log(frame)  # type: ignore[union-attr]  # frames need one

    def _replayed(self) -> Commit | None:
        """An idempotent retry answered again waits for its first write's record too
        (it may still be on its way to the disk). Call with the lock held."""
        return None if self._persistence is None else self._persistence.replayed()

    def _held(self) -> Held:
        """Every key's entries and the live markers, as a snapshot holds them: what
        re-establishing durability writes. Called with the lock held."""
        keys = [(key, list(rolling.entries())) for key, rolling in self._sums.items()]
        return keys, list(self._markers.items())

    def checkpoint(self) -> None:
        """Fold the log into a new snapshot (see Persistence.checkpoint)."""
        if self._persistence is not None:
            self._persistence.checkpoint()
