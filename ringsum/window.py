"""The rolling-sum data structure: no clock, no lock, no I/O.

Time is an integer count of microseconds, so window boundaries are exact. A value
recorded at time t lands in slot ``t // slot_us``; it counts while
``current_slot - slot <= span`` where ``span = window // slot_us``. Exact mode is
simply a slot of one microsecond: then the rule reads ``now - t <= window``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from .units import ceil_div

# Ints a key holds in a list before moving to a deque. A list costs nothing up front
# (an empty deque is a 600-byte block), and dropping its oldest entry shifts at most
# this many pointers; past it, a deque pops from the left in O(1) whatever the size.
SMALL_FLAT = 64


class RollingSum:
    """Entries (slot, subtotal) oldest first, plus an exact running total.

    Adds merge into the newest entry when they share its slot, so tick mode holds at
    most ``span + 1`` entries whatever the event rate; eviction pops from the left,
    so adds and totals are O(1) amortised. The entries lie flat in ints,
    ``slot, subtotal, slot, subtotal, ...``: a third of the memory of pairs, and
    nothing per entry for the garbage collector to walk. They sit in a list while few
    (most keys: a live key costs a few hundred bytes, not a kilobyte), in a deque once
    ``SMALL_FLAT`` is passed; both index and iterate alike, so only eviction differs.
    """

    __slots__ = ("_flat", "_slot_us", "_span", "_total")

    def __init__(self, window_us: int, resolution_us: int) -> None:
        self._slot_us = resolution_us or 1
        self._span = window_us // self._slot_us
        self._flat: list[int] | deque[int] = []
        self._total = 0

    def __len__(self) -> int:
        return len(self._flat) // 2

    def add(self, value: int, now_us: int) -> bool:
        """Add ``value`` at ``now_us``; True when it opened a new slot (and so moved
        the moment this sum expires further out)."""
        slot = now_us // self._slot_us
        flat = self._flat
        self._total += value
        if flat and flat[-2] >= slot:
            # Same slot, or the wall clock stepped back: keep the slots ordered by
            # booking the value in the newest slot rather than in the past.
            flat[-1] += value
            return False
        if len(flat) == SMALL_FLAT:
            self._flat = flat = deque(flat)
        flat.append(slot)
        flat.append(value)
        return True

    def expired(self, now_us: int) -> bool:
        """Whether every entry has left the window (without changing anything)."""
        return not self._flat or self._flat[-2] < now_us // self._slot_us - self._span

    def evict(self, now_us: int) -> int:
        """Drop the entries that have left the window; return how many."""
        oldest_kept = now_us // self._slot_us - self._span
        flat = self._flat
        dropped = 0
        while flat and flat[0] < oldest_kept:
            if type(flat) is deque:  # popleft is the faster way out of a deque
                flat.popleft()
                self._total -= flat.popleft()
            else:
                del flat[0]
                self._total -= flat[0]
                del flat[0]
            dropped += 1
        return dropped

    def total(self, now_us: int, window_us: int | None = None) -> int:
        """Sum over the window, or over a shorter one rounded up to whole slots."""
        self.evict(now_us)
        if window_us is None:
            return self._total
        oldest_kept = now_us // self._slot_us - ceil_div(window_us, self._slot_us)
        subtotal = 0
        newest_first = reversed(self._flat)
        for value, slot in zip(newest_first, newest_first, strict=True):
            if slot < oldest_kept:
                break
            subtotal += value
        return subtotal

    def series(self, now_us: int, step_us: int) -> tuple[int, list[int]]:
        """Cut the window into steps aligned to multiples of ``step_us``.

        Returns the start of the oldest step (µs) and one sum per step, oldest first:
        ``ceil(window / step) + 1`` steps, enough to hold every live slot, so the steps
        always add up to ``total(now_us)``. ``step_us`` must be a whole number of slots.
        """
        self.evict(now_us)
        step_slots = step_us // self._slot_us
        current = now_us // self._slot_us // step_slots
        count = ceil_div(self._span, step_slots) + 1
        first = current - count + 1
        sums = [0] * count
        for slot, value in self._pairs():
            sums[min(slot // step_slots, current) - first] += value
        return first * step_us, sums

    def entries(self) -> Iterator[tuple[int, int]]:
        """``(time_us, subtotal)`` pairs, oldest first, for snapshots."""
        for slot, value in self._pairs():
            yield slot * self._slot_us, value

    def _pairs(self) -> Iterator[tuple[int, int]]:
        oldest_first = iter(self._flat)
        return zip(oldest_first, oldest_first, strict=True)
