"""The rolling-sum data structure: no clock, no lock, no I/O.

Time is an integer count of microseconds, so window boundaries are exact. A value
recorded at time t lands in slot ``t // slot_us``; it counts while
``current_slot - slot <= span`` where ``span = window // slot_us``. Exact mode is
simply a slot of one microsecond: then the rule reads ``now - t <= window``.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterator
from itertools import accumulate, pairwise
from itertools import count as counting
from typing import Any

from .units import ceil_div

# Ints a key holds in a list before moving to a deque. A list costs nothing up front
# (an empty deque is a 600-byte block), and dropping its oldest entry shifts at most
# this many pointers; past it, a deque pops from the left in O(1) whatever the size.
SMALL_FLAT = 64
# When a key packs its slots into a ring, by measurement (tracemalloc, 100 keys of 1 h
# in 1 s ticks, benchmarks/footprint.py): an entry in the list or deque costs 80.5 B
# (two ints, two pointers) when its subtotal is past CPython's shared small ints,
# 48.5 B when not; a ring costs 8 B per slot of the window plus ~150 B, used or not
# (28.2 KiB for 3,601 slots). A key packs once its entries, even at 48.5 B each, cost
# what its ring would, so a ring never costs more than the entries it replaces: at
# 604 of 3,601 slots (1 in 6) for an hour in seconds. It unpacks below a quarter of
# that (151 entries), so flipping back and forth (an O(span) copy each way) takes a
# key losing 3/4 of its entries. Packing sooner (at 80.5 B: 362 entries) was measured
# too: a busy key's RSS 38.1 instead of 39.5 KiB (1,000 keys filled together) or 32.1
# instead of 35.0 KiB (arriving over an hour), the RSS above the ring being memory the
# allocator keeps from the ints held before packing. Not worth rings that cost 1.65x
# the entries of keys that count small numbers.
FLAT_ENTRY_BYTES = 48
RING_FIXED_BYTES = 150
EMPTY = -(2**63)  # a ring slot that holds no entry; int64 holds the rest of the subtotals
INT64_END = 2**63


def pack_at(span: int) -> int:
    """Entries from which a key of ``span + 1`` slots is held in a ring."""
    return (8 * (span + 1) + RING_FIXED_BYTES) // FLAT_ENTRY_BYTES + 1


def sum_of(subtotals: array[int]) -> int:
    """The sum of ring subtotals, EMPTY ones counting as 0: in C, not one by one."""
    return sum(subtotals) - subtotals.count(EMPTY) * EMPTY


class RollingSum:
    """Entries (slot, subtotal) oldest first, plus an exact running total.

    Adds merge into the newest entry when they share its slot, so tick mode holds at
    most ``span + 1`` entries whatever the event rate; eviction pops from the left,
    so adds and totals are O(1) amortised. The entries lie flat in ints,
    ``slot, subtotal, slot, subtotal, ...``: a third of the memory of pairs, and
    nothing per entry for the garbage collector to walk. They sit in a list while few
    (most keys: a live key costs a few hundred bytes, not a kilobyte), in a deque once
    ``SMALL_FLAT`` is passed; both index and iterate alike, so only eviction differs.
    Once dense (``pack_at``) the key becomes a PackedRollingSum, in place.
    """

    __slots__ = ("_flat", "_slot_us", "_span", "_total")

    def __init__(self, window_us: int, resolution_us: int) -> None:
        self._slot_us = resolution_us or 1
        self._span = window_us // self._slot_us
        self._flat: Any = []  # a list, then a deque; a _Ring once packed (the class changes with it)
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
        if len(flat) >= 8 and len(flat) == 2 * pack_at(self._span):
            self._pack()
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
        step_slots, first, current = self._steps(now_us, step_us)
        sums = [0] * (current - first + 1)
        for slot, value in self._pairs():
            sums[min(slot // step_slots, current) - first] += value
        return first * step_us, sums

    def _steps(self, now_us: int, step_us: int) -> tuple[int, int, int]:
        """Slots per step, and the oldest and current steps (in steps) of a series."""
        step_slots = step_us // self._slot_us
        current = now_us // self._slot_us // step_slots
        return step_slots, current - ceil_div(self._span, step_slots), current

    def entries(self) -> Iterator[tuple[int, int]]:
        """``(time_us, subtotal)`` pairs, oldest first, for snapshots."""
        for slot, value in self._pairs():
            yield slot * self._slot_us, value

    def _pairs(self) -> Iterator[tuple[int, int]]:
        oldest_first = iter(self._flat)
        return zip(oldest_first, oldest_first, strict=True)

    def _pack(self) -> None:
        """Hold the entries in a ring from now on, if they fit one."""
        ring = _Ring.packed(self._flat, self._span)
        if ring is not None:
            self._flat = ring
            self.__class__ = PackedRollingSum


class PackedRollingSum(RollingSum):
    """A dense key, same answers: its subtotals in a ring of int64 (``_Ring``), 8 bytes
    per slot of the window, 29 KB for an hour of seconds where a deque of ints took
    290 KB. A RollingSum turns into one in place, its class swapped (the storage's
    reference stays good, and sparse keys pay no branch), and back into a plain one
    when thinned out, or when a subtotal would not fit an int64: never wrapped, it
    goes on as a Python int. The running total is always a Python int.
    """

    __slots__ = ()
    _flat: _Ring

    def __len__(self) -> int:
        return self._flat.count

    def add(self, value: int, now_us: int) -> bool:
        slot = now_us // self._slot_us
        ring = self._flat
        if slot <= ring.newest:  # the newest slot; a clock that stepped back books there too
            subtotal = ring.subtotals[ring.newest_index] + value
            if EMPTY < subtotal < INT64_END:
                ring.subtotals[ring.newest_index] = subtotal
                self._total += value
                return False
        else:
            if slot - self._span > ring.oldest:  # added to without evict() first
                self._total -= ring.drop_before(slot - self._span)[1]
            if EMPTY < value < INT64_END:  # a new slot: its position is free
                ring.newest, ring.newest_index = slot, slot % len(ring.subtotals)
                ring.subtotals[ring.newest_index] = value
                ring.count += 1
                self._total += value
                return True
        self._unpack()
        return self.add(value, now_us)

    def expired(self, now_us: int) -> bool:
        return self._flat.newest < now_us // self._slot_us - self._span

    def evict(self, now_us: int) -> int:
        oldest_kept = now_us // self._slot_us - self._span
        ring = self._flat
        if oldest_kept <= ring.oldest:
            return 0
        if oldest_kept == ring.oldest + 1 and ring.count > ring.unpack_below:
            # One slot out, and the ring stays: what a busy key does tick after tick.
            index = ring.oldest % len(ring.subtotals)
            ring.oldest = oldest_kept
            held = ring.subtotals[index]
            if held == EMPTY:
                return 0
            ring.subtotals[index] = EMPTY
            ring.count -= 1
            self._total -= held
            return 1
        dropped, subtotal = ring.drop_before(oldest_kept)
        self._total -= subtotal
        if ring.count < ring.unpack_below:
            self._unpack()
        return dropped

    def total(self, now_us: int, window_us: int | None = None) -> int:
        self.evict(now_us)
        if window_us is None:
            return self._total
        return self._flat.sum_from(now_us // self._slot_us - ceil_div(window_us, self._slot_us))

    def series(self, now_us: int, step_us: int) -> tuple[int, list[int]]:
        """As RollingSum.series, from running sums of the ring's slots (built in C):
        two lookups a step instead of a loop over every entry."""
        self.evict(now_us)
        step_slots, first, current = self._steps(now_us, step_us)
        ring = self._flat
        held = ring.in_order().tolist()
        if len(held) != ring.count:
            held = [0 if value == EMPTY else value for value in held]
        running = list(accumulate(held, initial=0))  # running[i]: the sum of the i oldest slots
        # Where each step starts among the slots held; the current one takes later slots too.
        edges = [min(max(step * step_slots - ring.oldest, 0), len(held)) for step in range(first + 1, current + 1)]
        edges = [0, *edges, len(held)]
        return first * step_us, [running[end] - running[start] for start, end in pairwise(edges)]

    def _pairs(self) -> Iterator[tuple[int, int]]:
        return self._flat.pairs()

    def _unpack(self) -> None:
        self._flat = self._flat.unpacked()  # type: ignore[assignment]  # the plain class's shape
        self.__class__ = RollingSum  # type: ignore[assignment]  # back to the plain class, on purpose


class _Ring:
    """The subtotal of slot s at ``subtotals[s % (span + 1)]``, EMPTY where no value was
    added, for the slots ``oldest..newest`` (``newest - span <= oldest <= newest``,
    and the newest slot holds an entry). Every other position is EMPTY, so a slot that
    opens finds its position free once the slots before ``slot - span`` are dropped."""

    __slots__ = ("count", "newest", "newest_index", "oldest", "subtotals", "unpack_below")

    def __init__(self, subtotals: array[int], oldest: int, newest: int, count: int, unpack_below: int) -> None:
        self.subtotals, self.oldest, self.count, self.unpack_below = subtotals, oldest, count, unpack_below
        self.newest, self.newest_index = newest, newest % len(subtotals)

    @classmethod
    def packed(cls, flat: list[int] | deque[int], span: int) -> _Ring | None:
        """``flat`` as a ring, or None when it does not fit one: entries further apart
        than the window (added to without evict()), or a subtotal past int64."""
        oldest, newest = flat[0], flat[-2]
        if oldest < newest - span:
            return None
        subtotals = array("q", [EMPTY]) * (span + 1)
        oldest_first = iter(flat)
        for slot, value in zip(oldest_first, oldest_first, strict=True):
            if not EMPTY < value < INT64_END:
                return None
            subtotals[slot % (span + 1)] = value
        return cls(subtotals, oldest, newest, len(flat) // 2, ceil_div(pack_at(span), 4))

    def unpacked(self) -> list[int] | deque[int]:
        flat = [number for pair in self.pairs() for number in pair]
        return flat if len(flat) <= SMALL_FLAT else deque(flat)

    def drop_before(self, oldest_kept: int) -> tuple[int, int]:
        """Empty the slots before ``oldest_kept``; return how many entries that dropped,
        and their sum."""
        first, self.oldest = self.oldest, oldest_kept
        dropped_count = dropped_sum = 0
        for start, stop in self._positions(first, min(oldest_kept, self.newest + 1)):
            gone = self.subtotals[start:stop]
            dropped_count += len(gone) - gone.count(EMPTY)
            dropped_sum += sum_of(gone)
            self.subtotals[start:stop] = array("q", [EMPTY]) * len(gone)
        self.count -= dropped_count
        return dropped_count, dropped_sum

    def sum_from(self, first: int) -> int:
        """The sum of the slots from ``first`` to the newest."""
        found = 0
        for start, stop in self._positions(max(first, self.oldest), self.newest + 1):
            found += sum_of(self.subtotals[start:stop])
        return found

    def in_order(self) -> array[int]:
        """The subtotals of the slots oldest..newest, in that order."""
        held = array("q")
        for start, stop in self._positions(self.oldest, self.newest + 1):
            held += self.subtotals[start:stop]
        return held

    def pairs(self) -> Iterator[tuple[int, int]]:
        """(slot, subtotal) of every entry, oldest first."""
        return ((slot, value) for slot, value in zip(counting(self.oldest), self.in_order()) if value != EMPTY)

    def _positions(self, first: int, end: int) -> list[tuple[int, int]]:
        """The index ranges, in order, that hold the slots ``first..end - 1`` (at
        most the whole ring: two ranges when they wrap around its end)."""
        size = len(self.subtotals)
        if end <= first:
            return []
        start = first % size
        stop = start + min(end - first, size)
        return [(start, stop)] if stop <= size else [(start, size), (0, stop - size)]
