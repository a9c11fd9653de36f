"""The rolling-sum data structure: no clock, no lock, no I/O.

Time is an integer count of microseconds, so window boundaries are exact. A value
recorded at time t lands in slot ``t // slot_us``; it counts while
``current_slot - slot <= span`` where ``span = window // slot_us``. Exact mode is
simply a slot of one microsecond: then the rule reads ``now - t <= window``.

Each slot holds the sum of its values and how many there were (its count), so a
window answers a mean as well as a sum. A count of 0 in a slot that holds a value
means "not known": the slot was restored from data written before ringsum kept counts
(data dir format 1, Redis layout 1). It stays unknown whatever is added to it, and a
window reaching it answers no count (None) rather than an invented one.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterator
from itertools import accumulate, pairwise
from itertools import count as counting
from typing import Any

from .units import ceil_div

# Ints a key holds in a list before moving to a deque (32 entries of three ints). A
# list costs nothing up front (an empty deque is a 600-byte block), and dropping its
# oldest entry shifts at most this many pointers; past it, a deque pops from the left
# in O(1) whatever the size.
SMALL_FLAT = 96
# When a key packs its slots into a ring, by measurement (tracemalloc, 100 keys of 1 h
# in 1 s ticks, benchmarks/footprint.py): an entry in the list or deque costs 56.5 B
# (three ints, three pointers; its count a shared small int) when its subtotal is a
# shared small int too, 88.5 B when not; a ring costs 9 B per slot of the window (an
# int64 subtotal and a one-byte count, which widens when a count outgrows it) plus
# ~250 B, used or not (31.9 KiB for 3,601 slots). A key packs once its entries, even
# at 56.5 B each, cost what its ring would, so a ring never costs more than the
# entries it replaces: at 584 of 3,601 slots (1 in 6) for an hour in seconds. It
# unpacks below a quarter of that (146 entries), so flipping back and forth (an O(span)
# copy each way) takes a key losing 3/4 of its entries.
FLAT_ENTRY_BYTES = 56
RING_FIXED_BYTES = 250
RING_SLOT_BYTES = 9
EMPTY = -(2**63)  # a ring slot that holds no entry; int64 holds the rest of the subtotals
INT64_END = 2**63
# A ring's counts start one byte each and widen, all at once, when one outgrows them.
_WIDER = {"B": "H", "H": "I", "I": "Q"}


def pack_at(span: int) -> int:
    """Entries from which a key of ``span + 1`` slots is held in a ring."""
    return (RING_SLOT_BYTES * (span + 1) + RING_FIXED_BYTES) // FLAT_ENTRY_BYTES + 1


def sum_of(subtotals: array[int]) -> int:
    """The sum of ring subtotals, EMPTY ones counting as 0: in C, not one by one."""
    return sum(subtotals) - subtotals.count(EMPTY) * EMPTY


def _counts_array(counts: list[int]) -> array[int]:
    """``counts`` in the narrowest unsigned array that holds them."""
    typecode = "B"
    while True:
        try:
            return array(typecode, counts)
        except OverflowError:
            typecode = _WIDER[typecode]


class RollingSum:
    """Entries (slot, subtotal, count) oldest first, plus an exact running total.

    Adds merge into the newest entry when they share its slot, so tick mode holds at
    most ``span + 1`` entries whatever the event rate; eviction pops from the left,
    so adds and totals are O(1) amortised. The entries lie flat in ints,
    ``slot, subtotal, count, slot, ...``: far less memory than tuples, and nothing
    per entry for the garbage collector to walk. They sit in a list while few (most
    keys: a live key costs a few hundred bytes, not a kilobyte), in a deque once
    ``SMALL_FLAT`` is passed; both index and iterate alike, so only eviction differs.
    Once dense (``pack_at``) the key becomes a PackedRollingSum, in place. Counts are
    summed when asked for (``stats``, ``series``), so a write and a /sum pay nothing
    for them but one int.
    """

    __slots__ = ("_flat", "_slot_us", "_span", "_total")

    def __init__(self, window_us: int, resolution_us: int) -> None:
        self._slot_us = resolution_us or 1
        self._span = window_us // self._slot_us
        self._flat: Any = []  # a list, then a deque; a _Ring once packed (the class changes with it)
        self._total = 0

    def __len__(self) -> int:
        return len(self._flat) // 3

    def add(self, value: int, now_us: int, count: int = 1) -> bool:
        """Add ``value``, the sum of ``count`` values (0: how many is not known), at
        ``now_us``; True when it opened a new slot (and so moved the moment this sum
        expires further out)."""
        slot = now_us // self._slot_us
        flat = self._flat
        self._total += value
        if flat and flat[-3] >= slot:
            # Same slot, or the wall clock stepped back: keep the slots ordered by
            # booking the value in the newest slot rather than in the past.
            flat[-2] += value
            held = flat[-1]
            flat[-1] = held and count and held + count  # an unknown count (0) stays unknown
            return False
        if len(flat) == SMALL_FLAT:
            self._flat = flat = deque(flat)
        flat.append(slot)
        flat.append(value)
        flat.append(count)
        if len(flat) >= 12 and len(flat) == 3 * pack_at(self._span):
            self._pack()
        return True

    def expired(self, now_us: int) -> bool:
        """Whether every entry has left the window (without changing anything)."""
        return not self._flat or self._flat[-3] < now_us // self._slot_us - self._span

    def evict(self, now_us: int) -> int:
        """Drop the entries that have left the window; return how many."""
        oldest_kept = now_us // self._slot_us - self._span
        flat = self._flat
        dropped = 0
        while flat and flat[0] < oldest_kept:
            if type(flat) is deque:  # popleft is the faster way out of a deque
                flat.popleft()
                self._total -= flat.popleft()
                flat.popleft()
            else:
                self._total -= flat[1]
                del flat[:3]
            dropped += 1
        return dropped

    def total(self, now_us: int, window_us: int | None = None) -> int:
        """Sum over the window, or over a shorter one rounded up to whole slots."""
        self.evict(now_us)
        if window_us is None:
            return self._total
        return sum(value for value, _ in self._newest_within(now_us, window_us))

    def stats(self, now_us: int, window_us: int | None = None) -> tuple[int, int | None]:
        """The sum and the count of values over the window (or a shorter one, as
        ``total``); the count is None when a slot in it does not know its own."""
        found = self.total(now_us, window_us)
        counted = 0
        for _, count in self._newest_within(now_us, window_us):
            if not count:
                return found, None
            counted += count
        return found, counted

    def _newest_within(self, now_us: int, window_us: int | None) -> Iterator[tuple[int, int]]:
        """(subtotal, count) of each entry in the window (or a shorter one), newest first."""
        oldest_kept = self._oldest_kept(now_us, window_us)
        newest_first = reversed(self._flat)
        for count, value, slot in zip(newest_first, newest_first, newest_first, strict=True):
            if slot < oldest_kept:
                return
            yield value, count

    def _oldest_kept(self, now_us: int, window_us: int | None) -> int:
        """The oldest slot of the window, or of a shorter one rounded up to whole slots."""
        slots = self._span if window_us is None else ceil_div(window_us, self._slot_us)
        return now_us // self._slot_us - slots

    def series(
        self, now_us: int, step_us: int, with_counts: bool = False
    ) -> tuple[int, list[int], list[int | None] | None]:
        """Cut the window into steps aligned to multiples of ``step_us``.

        Returns the start of the oldest step (µs), one sum per step and, ``with_counts``,
        one count per step (None: a slot in it does not know its count; else no list),
        oldest first: ``ceil(window / step) + 1`` steps, enough to hold every live slot,
        so the steps always add up to ``total(now_us)``. ``step_us`` must be a whole
        number of slots. Counts only when asked: they double the work.
        """
        self.evict(now_us)
        step_slots, first, current = self._steps(now_us, step_us)
        sums = [0] * (current - first + 1)
        if not with_counts:
            for slot, value, _ in self._triples():
                sums[min(slot // step_slots, current) - first] += value
            return first * step_us, sums, None
        counts = [0] * len(sums)
        uncounted = set()
        for slot, value, count in self._triples():
            step = min(slot // step_slots, current) - first
            sums[step] += value
            counts[step] += count
            if not count:
                uncounted.add(step)
        return first * step_us, sums, [None if step in uncounted else n for step, n in enumerate(counts)]

    def _steps(self, now_us: int, step_us: int) -> tuple[int, int, int]:
        """Slots per step, and the oldest and current steps (in steps) of a series."""
        step_slots = step_us // self._slot_us
        current = now_us // self._slot_us // step_slots
        return step_slots, current - ceil_div(self._span, step_slots), current

    def entries(self) -> Iterator[tuple[int, int, int]]:
        """``(time_us, subtotal, count)``, oldest first, for snapshots (count 0: not known)."""
        for slot, value, count in self._triples():
            yield slot * self._slot_us, value, count

    def _triples(self) -> Iterator[tuple[int, int, int]]:
        oldest_first = iter(self._flat)
        return zip(oldest_first, oldest_first, oldest_first, strict=True)

    def _pack(self) -> None:
        """Hold the entries in a ring from now on, if they fit one."""
        ring = _Ring.packed(self._flat, self._span)
        if ring is not None:
            self._flat = ring
            self.__class__ = PackedRollingSum


class PackedRollingSum(RollingSum):
    """A dense key, same answers: its subtotals in a ring of int64 (``_Ring``) and its
    counts in a ring of one byte each (wider once one outgrows it), 9 bytes per slot of
    the window, 32 KB for an hour of seconds where a deque of ints took 290 KB. A
    RollingSum turns into one in place, its class swapped (the storage's reference
    stays good, and sparse keys pay no branch), and back into a plain one when thinned
    out, or when a subtotal would not fit an int64: never wrapped, it goes on as a
    Python int. The running total is always a Python int.
    """

    __slots__ = ()
    _flat: _Ring

    def __len__(self) -> int:
        return self._flat.count

    def add(self, value: int, now_us: int, count: int = 1) -> bool:
        slot = now_us // self._slot_us
        ring = self._flat
        if slot <= ring.newest:  # the newest slot; a clock that stepped back books there too
            index = ring.newest_index
            subtotal = ring.subtotals[index] + value
            if EMPTY < subtotal < INT64_END:
                ring.subtotals[index] = subtotal
                held = ring.counts[index]
                merged = held and count and held + count  # an unknown count (0) stays unknown
                try:
                    ring.counts[index] = merged
                except OverflowError:
                    ring.set_count(index, merged)
                self._total += value
                return False
        else:
            if slot - self._span > ring.oldest:  # added to without evict() first
                self._total -= ring.drop_before(slot - self._span)[1]
            if EMPTY < value < INT64_END:  # a new slot: its position is free
                ring.newest, ring.newest_index = slot, slot % len(ring.subtotals)
                ring.subtotals[ring.newest_index] = value
                try:
                    ring.counts[ring.newest_index] = count
                except OverflowError:
                    ring.set_count(ring.newest_index, count)
                ring.count += 1
                self._total += value
                return True
        self._unpack()
        return self.add(value, now_us, count)

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
            ring.counts[index] = 0
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
        return self._flat.sum_from(self._oldest_kept(now_us, window_us))

    def stats(self, now_us: int, window_us: int | None = None) -> tuple[int, int | None]:
        found = self.total(now_us, window_us)
        if type(self._flat) is not _Ring:  # thinned out by the eviction: no longer packed
            return RollingSum.stats(self, now_us, window_us)
        return found, self._flat.count_from(self._oldest_kept(now_us, window_us))

    def series(
        self, now_us: int, step_us: int, with_counts: bool = False
    ) -> tuple[int, list[int], list[int | None] | None]:
        """As RollingSum.series, from running sums of the ring's slots (built in C):
        two lookups a step instead of a loop over every entry."""
        self.evict(now_us)
        if type(self._flat) is not _Ring:  # thinned out by the eviction: no longer packed
            return RollingSum.series(self, now_us, step_us, with_counts)
        step_slots, first, current = self._steps(now_us, step_us)
        ring = self._flat
        raw = held = ring.in_order().tolist()
        empty = raw.count(EMPTY)
        if empty:
            held = [0 if value == EMPTY else value for value in raw]
        # Where each step starts among the slots held; the current one takes later slots too.
        edges = [min(max(step * step_slots - ring.oldest, 0), len(held)) for step in range(first + 1, current + 1)]
        edges = [0, *edges, len(held)]
        sums = _step_sums(held, edges)
        if not with_counts:
            return first * step_us, sums, None
        counts = ring.in_order(ring.counts).tolist()
        step_counts: list[int | None] = list(_step_sums(counts, edges))
        if counts.count(0) > empty:  # some slots held do not know their count
            unknown = [value != EMPTY and count == 0 for value, count in zip(raw, counts, strict=True)]
            for step, found in enumerate(_step_sums(unknown, edges)):
                if found:
                    step_counts[step] = None
        return first * step_us, sums, step_counts

    def _triples(self) -> Iterator[tuple[int, int, int]]:
        return self._flat.triples()

    def _unpack(self) -> None:
        self._flat = self._flat.unpacked()  # type: ignore[assignment]  # the plain class's shape
        self.__class__ = RollingSum  # type: ignore[assignment]  # back to the plain class, on purpose


def _step_sums(values: list[int] | list[bool], edges: list[int]) -> list[int]:
    """The sums of ``values[start:end]`` for each pair of ``edges`` in turn."""
    running = list(accumulate(values, initial=0))  # running[i]: the sum of the i first
    return [running[end] - running[start] for start, end in pairwise(edges)]


class _Ring:
    """The subtotal of slot s at ``subtotals[s % (span + 1)]``, EMPTY where no value was
    added, and its count at the same position of ``counts`` (0 where EMPTY, or where
    not known), for the slots ``oldest..newest`` (``newest - span <= oldest <= newest``,
    and the newest slot holds an entry). Every other position is EMPTY, so a slot that
    opens finds its position free once the slots before ``slot - span`` are dropped."""

    __slots__ = ("count", "counts", "newest", "newest_index", "oldest", "subtotals", "unpack_below")

    def __init__(
        self, subtotals: array[int], counts: array[int], oldest: int, newest: int, count: int, unpack_below: int
    ) -> None:
        self.subtotals, self.counts, self.oldest, self.count = subtotals, counts, oldest, count
        self.newest, self.newest_index, self.unpack_below = newest, newest % len(subtotals), unpack_below

    @classmethod
    def packed(cls, flat: list[int] | deque[int], span: int) -> _Ring | None:
        """``flat`` as a ring, or None when it does not fit one: entries further apart
        than the window (added to without evict()), or a subtotal past int64."""
        oldest, newest = flat[0], flat[-3]
        if oldest < newest - span:
            return None
        subtotals = array("q", [EMPTY]) * (span + 1)
        counts = [0] * (span + 1)
        oldest_first = iter(flat)
        for slot, value, count in zip(oldest_first, oldest_first, oldest_first, strict=True):
            if not EMPTY < value < INT64_END:
                return None
            subtotals[slot % (span + 1)] = value
            counts[slot % (span + 1)] = count
        return cls(subtotals, _counts_array(counts), oldest, newest, len(flat) // 3, ceil_div(pack_at(span), 4))

    def set_count(self, index: int, count: int) -> None:
        """Put ``count`` at ``index``, widening every count first if it does not fit."""
        try:
            self.counts[index] = count
        except OverflowError:
            self.counts = _counts_array([*self.counts, count])[:-1]
            self.counts[index] = count

    def unpacked(self) -> list[int] | deque[int]:
        flat = [number for triple in self.triples() for number in triple]
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
            self.counts[start:stop] = array(self.counts.typecode, [0]) * len(gone)
        self.count -= dropped_count
        return dropped_count, dropped_sum

    def sum_from(self, first: int) -> int:
        """The sum of the slots from ``first`` to the newest."""
        found = 0
        for start, stop in self._positions(max(first, self.oldest), self.newest + 1):
            found += sum_of(self.subtotals[start:stop])
        return found

    def count_from(self, first: int) -> int | None:
        """The count of the slots from ``first`` to the newest; None when one of them
        holds a value but not its count."""
        found = unknown = 0
        for start, stop in self._positions(max(first, self.oldest), self.newest + 1):
            counts = self.counts[start:stop]
            found += sum(counts)
            unknown += counts.count(0) - self.subtotals[start:stop].count(EMPTY)
        return None if unknown else found

    def in_order(self, cells: array[int] | None = None) -> array[int]:
        """The subtotals (or ``cells``, the counts) of the slots oldest..newest, in that order."""
        cells = self.subtotals if cells is None else cells
        held = array(cells.typecode)
        for start, stop in self._positions(self.oldest, self.newest + 1):
            held += cells[start:stop]
        return held

    def triples(self) -> Iterator[tuple[int, int, int]]:
        """(slot, subtotal, count) of every entry, oldest first."""
        return (
            (slot, value, count)
            for slot, value, count in zip(counting(self.oldest), self.in_order(), self.in_order(self.counts))
            if value != EMPTY
        )

    def _positions(self, first: int, end: int) -> list[tuple[int, int]]:
        """The index ranges, in order, that hold the slots ``first..end - 1`` (at
        most the whole ring: two ranges when they wrap around its end)."""
        size = len(self.subtotals)
        if end <= first:
            return []
        start = first % size
        stop = start + min(end - first, size)
        return [(start, stop)] if stop <= size else [(start, size), (0, stop - size)]
