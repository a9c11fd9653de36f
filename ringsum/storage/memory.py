"""In-process storage: a dict of RollingSum behind one lock, a sweeper, a snapshot.

It lives in one process; several worker processes would each hold a different
part of the data, which is why serving with more than one needs Redis.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..clock import now_us
from ..window import RollingSum
from .base import KeyLimitReached, Series, Storage, StorageStats
from .snapshot import read_snapshot, write_snapshot

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 1.0
SWEEP_SLICE = 1000  # keys per lock hold, so a sweep of many keys never stalls requests for long


class MemoryStorage(Storage):
    def __init__(self, settings: Settings, clock: Callable[[], int] | None = None) -> None:
        self._window_us = settings.window_us
        self._resolution_us = settings.resolution_us
        self._slot_us = settings.slot_us
        self._max_keys = settings.max_keys
        self._snapshot_path = settings.snapshot_path
        self._clock = clock or now_us
        self._sums: dict[str, RollingSum] = {}
        self._lock = threading.Lock()
        self._full_sweep_slot: int | None = None
        self.evictions = 0  # entries aged out, for /metrics
        self.last_sweep_seconds = 0.0
        if self._snapshot_path:
            self._restore(read_snapshot(self._snapshot_path))
        self._stopping = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_forever, name="ringsum-sweeper", daemon=True)
        self._sweeper.start()

    # -- the storage interface -------------------------------------------------

    def record(self, key: str, value: int) -> None:
        now = self._clock()
        with self._lock:
            rolling = self._sums.get(key)
            if rolling is None:
                self._make_room(1, now)
                rolling = self._sums[key] = self._new_sum()
            else:
                self.evictions += rolling.evict(now)
            rolling.add(value, now)

    def record_many(self, events: Sequence[tuple[str, int]]) -> None:
        now = self._clock()
        with self._lock:
            new_keys = {key for key, _ in events if key not in self._sums}
            self._make_room(len(new_keys), now)
            for key in new_keys:
                self._sums[key] = self._new_sum()
            for key, value in events:
                rolling = self._sums[key]
                self.evictions += rolling.evict(now)
                rolling.add(value, now)

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

    def keys(self, prefix: str = "", limit: int = 1000) -> list[tuple[str, int]]:
        now = self._clock()
        with self._lock:
            matching = sorted(key for key in self._sums if key.startswith(prefix))
            found = []
            for key in matching:
                rolling = self._live(key, now)
                if rolling is not None:
                    found.append((key, rolling.total(now)))
                    if len(found) == limit:
                        break
        return found

    def delete(self, key: str) -> None:
        with self._lock:
            self._sums.pop(key, None)

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
        )

    def close(self) -> None:
        """Stop the sweeper and write the snapshot, if one is configured."""
        self._stopping.set()
        if self._sweeper.is_alive() and self._sweeper is not threading.current_thread():
            self._sweeper.join()
        if self._snapshot_path:
            write_snapshot(self._snapshot_path, self._export())
            log.info("snapshot of %d keys written to %s", len(self._sums), self._snapshot_path)

    # -- ageing out ------------------------------------------------------------

    def sweep(self) -> None:
        """Drop every key whose values have all aged out, a slice of keys at a time."""
        started = time.perf_counter()
        now = self._clock()
        with self._lock:  # copying the dict while a request adds a key could fail mid-copy
            keys = list(self._sums)
        for start in range(0, len(keys), SWEEP_SLICE):
            with self._lock:
                for key in keys[start : start + SWEEP_SLICE]:
                    self._live(key, now)
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
            del self._sums[key]
            return None
        return rolling

    def _make_room(self, new_keys: int, now: int) -> None:
        """Raise KeyLimitReached unless ``new_keys`` more keys fit. At the limit, sweep
        once per tick first: keys that aged out since the last sweep do not count."""
        if len(self._sums) + new_keys <= self._max_keys:
            return
        slot = now // self._slot_us
        if self._full_sweep_slot != slot:
            self._full_sweep_slot = slot
            for key in list(self._sums):
                self._live(key, now)
        if len(self._sums) + new_keys > self._max_keys:
            raise KeyLimitReached(f"{self._max_keys} live keys are held already (RINGSUM_MAX_KEYS)")

    def _new_sum(self) -> RollingSum:
        return RollingSum(self._window_us, self._resolution_us)

    # -- snapshot --------------------------------------------------------------

    def _export(self) -> list[tuple[str, list[tuple[int, int]]]]:
        with self._lock:
            return [(key, list(rolling.entries())) for key, rolling in self._sums.items()]

    def _restore(self, saved: dict[str, list[tuple[int, int]]]) -> None:
        """Re-add saved entries at their own times, then age out what expired while down."""
        now = self._clock()
        for key, entries in saved.items():
            rolling = self._new_sum()
            for time_us, subtotal in entries:
                rolling.add(subtotal, time_us)
            rolling.evict(now)
            if rolling and len(self._sums) < self._max_keys:
                self._sums[key] = rolling
        log.info("restored %d live keys from %s", len(self._sums), self._snapshot_path)
