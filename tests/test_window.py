"""The window (docs/api.md#the-window): RollingSum against a naive model, and the exact boundaries
through HTTP with a frozen clock, in exact mode and tick mode."""

from __future__ import annotations

import sys
import tracemalloc
from collections import deque
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time
from helpers import total
from hypothesis import event, given, settings
from hypothesis import strategies as st

from ringsum.core.units import parse_duration_us
from ringsum.core.window import SMALL_FLAT, PackedRollingSum, RollingSum, pack_at

MAX = 2**53 - 1
HOUR_US = 3_600_000_000


class NaiveWindow:
    """The model: every (t, v) kept in a plain list and filtered on every read."""

    def __init__(self, window_us: int, resolution_us: int) -> None:
        self.window_us = window_us
        self.slot_us = resolution_us or 1  # exact mode: floor(now/1) - floor(t/1) is now - t
        self.values: list[tuple[int, int]] = []

    def live(self, now: int, window_us: int | None = None) -> list[tuple[int, int]]:
        ticks = -(-(window_us or self.window_us) // self.slot_us)  # a shorter window rounds up to whole ticks
        return [(t, v) for t, v in self.values if now // self.slot_us - t // self.slot_us <= ticks]

    def total(self, now: int, window_us: int | None = None) -> int:
        return sum(v for _, v in self.live(now, window_us))

    def count(self, now: int, window_us: int | None = None) -> int:
        return len(self.live(now, window_us))

    def series(self, now: int, step_us: int) -> tuple[int, list[int], list[int | None]]:
        count = -(-self.window_us // step_us) + 1  # the oldest step starts before the window does
        first = now // step_us - count + 1
        sums, counts = [0] * count, [0] * count
        for t, v in self.live(now):
            sums[t // step_us - first] += v
            counts[t // step_us - first] += 1
        return first * step_us, sums, counts  # type: ignore[return-value]


@st.composite
def windows(draw: st.DrawFn) -> tuple[int, int]:
    """(window_us, resolution_us): exact mode, or a window of whole ticks."""
    if draw(st.booleans()):
        return draw(st.integers(1, 5_000)), 0
    resolution = draw(st.sampled_from([1, 3, 1_000, 1_000_000]))
    return resolution * draw(st.integers(1, 12)), resolution


def operations(window_us: int, resolution_us: int) -> st.SearchStrategy:
    slot = resolution_us or 1
    edges = sorted(
        {0, 1, slot - 1, slot, slot + 1, 2 * slot, window_us - 1, window_us, window_us + 1, window_us + slot}
    )
    # Shorter windows just off whole ticks, where rounding up to a tick matters.
    sub_windows = sorted({w for k in range(1, window_us // slot + 1) for w in (k * slot - 1, k * slot + 1)} - {0})
    sub_windows = [w for w in sub_windows if w <= window_us] or [window_us]
    steps = [slot * k for k in range(1, window_us // slot + 1) if window_us // slot // k <= 200]
    return st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.one_of(st.integers(-1000, 1000), st.integers(-MAX, MAX))),
            st.tuples(st.just("step"), st.one_of(st.sampled_from(edges), st.integers(0, 3 * window_us))),
            st.tuples(st.just("total")),
            st.tuples(st.just("sub_total"), st.one_of(st.integers(1, window_us), st.sampled_from(sub_windows))),
            st.tuples(st.just("series"), st.sampled_from(steps)),
        ),
        max_size=60,
    )


@settings(max_examples=300, deadline=None)
@given(data=st.data(), window=windows(), start=st.one_of(st.just(0), st.integers(0, 2 * 10**15)))
def test_rolling_sum_matches_the_naive_model(data: st.DataObject, window: tuple[int, int], start: int) -> None:
    window_us, resolution_us = window
    rolling, model = RollingSum(window_us, resolution_us), NaiveWindow(window_us, resolution_us)
    now = start
    for operation, *args in data.draw(operations(window_us, resolution_us)):
        if operation == "add":
            rolling.add(args[0], now)
            model.values.append((now, args[0]))
        elif operation == "step":
            now += args[0]
        elif operation == "total":
            assert rolling.total(now) == model.total(now)
            assert rolling.stats(now) == (model.total(now), model.count(now))
            live_slots = {t // model.slot_us for t, _ in model.live(now)}
            assert len(rolling) == len(live_slots)  # one entry per live tick: nothing stale kept
            if resolution_us:
                assert len(rolling) <= window_us // resolution_us + 1
        elif operation == "sub_total":
            assert rolling.total(now, args[0]) == model.total(now, args[0])
            assert rolling.stats(now, args[0]) == (model.total(now, args[0]), model.count(now, args[0]))
        elif operation == "series":
            start_us, sums, counts = rolling.series(now, args[0], with_counts=True)
            assert (start_us, sums, counts) == model.series(now, args[0])
            assert sum(sums) == model.total(now)
    # What a snapshot saves rebuilds the same sums.
    restored = RollingSum(window_us, resolution_us)
    for time_us, subtotal, count in rolling.entries():
        restored.add(subtotal, time_us, count)
    for later in (now, now + (resolution_us or 1), now + window_us):
        assert restored.stats(later) == (model.total(later), model.count(later))


def test_a_clock_stepping_back_books_the_value_in_the_newest_tick() -> None:
    rolling = RollingSum(window_us=100, resolution_us=10)
    rolling.add(1, now_us=1_000)
    rolling.add(2, now_us=500)  # the wall clock stepped back
    assert rolling.total(1_000) == 3
    assert rolling.total(1_109) == 3  # floor(1109/10) - floor(1000/10) = 10 ticks: still in
    assert rolling.total(1_110) == 0
    assert list(rolling.entries()) == []


# -- boundaries through HTTP, clock frozen --------------------------------------

START = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)
START_US = int(START.timestamp()) * 1_000_000


def move_to(clock, time_us: int) -> None:
    clock.move_to(START + timedelta(microseconds=time_us - START_US))


@pytest.mark.parametrize("window", ["1h", "90s"])
def test_exact_mode_counts_a_value_at_exactly_the_window_and_drops_it_a_microsecond_later(make_app, window) -> None:
    client = make_app(RINGSUM_WINDOW=window, RINGSUM_RESOLUTION="0").test_client()
    window_us = parse_duration_us(window)
    recorded_at = START_US + 123_457
    with freeze_time(START) as clock:
        move_to(clock, recorded_at)
        client.post("/metric/k", json={"value": 5})
        move_to(clock, recorded_at + 1)
        client.post("/metric/k", json={"value": 7})
        move_to(clock, recorded_at + window_us)
        assert total(client) == 12
        move_to(clock, recorded_at + window_us + 1)
        assert total(client) == 7
        move_to(clock, recorded_at + window_us + 2)
        assert total(client) == 0


@pytest.mark.parametrize(
    "window, resolution, offset_in_tick",
    [
        ("1h", "1s", 0),
        ("1h", "1s", 1),
        ("1h", "1s", 700_000),
        ("1h", "1s", 999_999),
        ("90s", "250ms", 0),
        ("90s", "250ms", 125_001),
        ("90s", "250ms", 249_999),
        ("90s", "30s", 29_999_999),
    ],
)
def test_tick_mode_keeps_a_value_the_window_and_at_most_one_tick_more(
    make_app, window: str, resolution: str, offset_in_tick: int
) -> None:
    client = make_app(RINGSUM_WINDOW=window, RINGSUM_RESOLUTION=resolution).test_client()
    window_us, tick_us = parse_duration_us(window), parse_duration_us(resolution)
    recorded_at = START_US + offset_in_tick  # START is on a tick, so this is mid-tick

    def counts(now: int) -> bool:  # docs/api.md#tick-mode, literally
        return now // tick_us - recorded_at // tick_us <= window_us // tick_us

    last_counted = (recorded_at // tick_us + window_us // tick_us + 1) * tick_us - 1
    assert window_us <= last_counted - recorded_at < window_us + tick_us
    with freeze_time(START) as clock:
        move_to(clock, recorded_at)
        client.post("/metric/k", json={"value": 5})
        for now in sorted({recorded_at, recorded_at + window_us, last_counted - 1, last_counted, last_counted + 1}):
            move_to(clock, now)
            assert total(client) == (5 if counts(now) else 0), f"{now - recorded_at} µs after recording"
        assert total(client) == 0


def test_values_in_the_same_tick_merge_and_age_out_together(make_app) -> None:
    client = make_app(RINGSUM_WINDOW="10s", RINGSUM_RESOLUTION="1s").test_client()
    with freeze_time(START) as clock:
        client.post("/metric/k", json={"value": 1})
        clock.tick(timedelta(milliseconds=999))
        client.post("/metric/k", json={"value": 2})
        clock.tick(timedelta(milliseconds=1))
        client.post("/metric/k", json={"value": 4})
        move_to(clock, START_US + 11_000_000 - 1)
        assert total(client) == 7
        move_to(clock, START_US + 11_000_000)
        assert total(client) == 4
        move_to(clock, START_US + 12_000_000)
        assert total(client) == 0


def test_a_key_whose_values_aged_out_starts_again_from_zero(make_app) -> None:
    client = make_app(RINGSUM_WINDOW="1m").test_client()
    with freeze_time(START) as clock:
        client.post("/metric/k", json={"value": 5})
        clock.tick(timedelta(minutes=2))
        assert total(client) == 0
        client.post("/metric/k", json={"value": 7})
        assert total(client) == 7
        clock.tick(timedelta(seconds=30))
        client.post("/metric/k", json={"value": 1})
        clock.tick(timedelta(seconds=31))
        assert total(client) == 1


def test_window_setting_defaults_to_one_hour_in_one_second_ticks(make_app) -> None:
    client = make_app().test_client()
    with freeze_time(START) as clock:
        move_to(clock, START_US + 500_000)
        client.post("/metric/k", json={"value": 5})
        move_to(clock, START_US + HOUR_US + 1_000_000 - 1)
        assert total(client) == 5
        move_to(clock, START_US + HOUR_US + 1_000_000)
        assert total(client) == 0


# -- the containers: a list while few, a deque past SMALL_FLAT, a ring once dense --------


def test_a_key_with_one_entry_costs_a_few_hundred_bytes_not_a_deque_block() -> None:
    rolling = RollingSum(window_us=HOUR_US, resolution_us=1_000_000)
    rolling.add(3, now_us=START_US)
    held = sys.getsizeof(rolling) + sys.getsizeof(rolling._flat) + sum(map(sys.getsizeof, rolling._flat))
    assert held <= 250
    assert sys.getsizeof(deque()) > 500  # what each key paid before, for its empty first block
    assert rolling.total(START_US) == 3
    assert list(rolling.entries()) == [(START_US, 3, 1)]


def test_a_busy_key_of_an_hour_in_seconds_costs_its_ring_not_a_deque_of_ints() -> None:
    """3,601 ticks with values past CPython's shared small ints: ~290 KB as ints in a
    deque, 9 bytes a tick packed, its count included (docs/api.md#footprint: at most 48 KiB)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        rolling = RollingSum(window_us=HOUR_US, resolution_us=1_000_000)
        for tick in range(3601):
            now = START_US + tick * 1_000_000
            rolling.evict(now)
            rolling.add(1_000 + tick, now)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kind(rolling) == "ring" and len(rolling) == 3601
    assert 3601 * 9 < held <= 33 * 1024
    assert rolling.stats(now) == (sum(range(1_000, 4_601)), 3601)


def kind(rolling: RollingSum) -> str:
    """The container a key's entries are in: list, deque or ring."""
    return "ring" if type(rolling) is PackedRollingSum else type(rolling._flat).__name__


@pytest.mark.parametrize("resolution_us", [0, 1_000])
def test_each_container_in_turn_as_a_key_fills_and_empties_with_sums_exact(resolution_us: int) -> None:
    slot_us = resolution_us or 1
    span = 1000  # a ring once 166 entries are live, a deque again under 42
    window_us = span * slot_us
    assert (pack_at(span), SMALL_FLAT) == (166, 96)
    rolling, model = RollingSum(window_us, resolution_us), NaiveWindow(window_us, resolution_us)
    seen = []

    def check(now: int) -> None:
        assert rolling.total(now) == model.total(now)
        assert rolling.total(now, 7 * slot_us) == model.total(now, 7 * slot_us)
        assert len(rolling) == len({t // slot_us for t, _ in model.live(now)})
        if kind(rolling) not in seen[-1:]:
            seen.append(kind(rolling))

    now = START_US
    for step in range(1300):  # one value a slot: list, deque at 33 entries, ring at 166
        now = START_US + step * slot_us
        rolling.evict(now)
        rolling.add(10_000 + step, now)
        model.values.append((now, 10_000 + step))
        assert kind(rolling) == ("list" if step < 32 else "deque" if step + 1 < 166 else "ring")
        if step % 7 == 0:
            check(now)
    assert [value for _, value, _ in rolling.entries()] == [10_000 + step for step in range(299, 1300)]
    for gap in (950, 40, 1, 1):  # 51 entries left: still a ring; 11: a list; then 10, 9
        now += gap * slot_us
        check(now)
    assert seen == ["list", "deque", "ring", "list"]
    assert rolling.expired(now + window_us)
    assert rolling.evict(now + window_us) == 9 and not rolling


def test_a_ring_thinned_out_goes_back_to_a_deque() -> None:
    rolling = RollingSum(window_us=1000, resolution_us=1)
    for t in range(START_US, START_US + 1001):
        rolling.add(t - START_US, t)
    assert kind(rolling) == "ring"
    assert rolling.evict(START_US + 2000) == 1000  # one left
    assert kind(rolling) == "list" and list(rolling.entries()) == [(START_US + 1000, 1000, 1)]
    rolling = RollingSum(window_us=1000, resolution_us=1)
    for t in range(START_US, START_US + 1001):
        rolling.add(1, t)
    assert rolling.evict(START_US + 1000 + 959) == 959  # 42 left: a ring still
    assert kind(rolling) == "ring"
    assert rolling.evict(START_US + 1000 + 960) == 1  # 41: a deque (123 ints)
    assert kind(rolling) == "deque" and rolling.stats(START_US + 1960) == (41, 41)


def test_a_subtotal_past_int64_leaves_the_ring_and_never_wraps() -> None:
    rolling = RollingSum(window_us=100, resolution_us=1)
    for t in range(START_US, START_US + 30):
        rolling.add(1, t)
    assert kind(rolling) == "ring"
    now = START_US + 29
    rolling.add(2**62, now)
    rolling.add(2**62 - 30, now)  # the newest tick holds 2**63 - 29: still fits
    assert kind(rolling) == "ring"
    rolling.add(2**62, now)  # past 2**63 - 1: Python ints from here
    assert kind(rolling) == "list"  # 30 entries
    assert rolling.total(now) == 29 + 1 + 3 * 2**62 - 30
    assert list(rolling.entries())[-1] == (now, 1 + 3 * 2**62 - 30, 4)
    assert rolling.total(now, 1) == 1 + 1 + 3 * 2**62 - 30  # the last two ticks
    # A subtotal of exactly -2**63 is what marks an empty slot: it stays in ints too.
    rolling = RollingSum(window_us=10, resolution_us=1)
    for t in range(START_US, START_US + 7):
        rolling.add(5, t)
    assert kind(rolling) == "ring"
    rolling.add(-(2**63) - 5, START_US + 6)
    assert kind(rolling) == "list" and rolling.total(START_US + 6) == 30 - 2**63
    assert len(rolling) == 7


def test_a_ring_added_to_far_apart_without_evict_keeps_one_window() -> None:
    """RollingSum alone (restoring, or Redis entries) may add without evicting first:
    a ring then makes room itself."""
    rolling = RollingSum(window_us=10, resolution_us=1)
    for t in range(START_US, START_US + 11):
        rolling.add(1, t)
    assert kind(rolling) == "ring" and len(rolling) == 11
    rolling.add(7, START_US + 15)  # slots 0-4 leave: 15 - 10
    assert rolling.total(START_US + 15) == 6 + 7 and len(rolling) == 7
    rolling.add(9, START_US + 1_000)  # everything left
    assert rolling.total(START_US + 1_000) == 9 and list(rolling.entries()) == [(START_US + 1_000, 9, 1)]


def test_evicting_from_the_list_drops_only_the_entries_that_left() -> None:
    rolling = RollingSum(window_us=100, resolution_us=1)
    for t in range(START_US, START_US + 5):
        rolling.add(1, t)
    assert type(rolling._flat) is list
    assert rolling.evict(START_US + 102) == 2  # slots 0 and 1 are more than 100 behind
    assert [t for t, _, _ in rolling.entries()] == [START_US + 2, START_US + 3, START_US + 4]
    assert rolling.total(START_US + 102) == 3


# -- both containers and every switch, against a model of the rules with the clock stepping back


class Ledger:
    """Today's rules in the plainest form: [slot, subtotal, count] entries, oldest
    first; an add merges into the newest entry when its slot is not later (so a clock
    that stepped back books into the newest tick), and a count of 0 (not known) stays
    0; reads first drop what left the window."""

    def __init__(self, window_us: int, resolution_us: int) -> None:
        self.slot_us = resolution_us or 1
        self.span = window_us // self.slot_us
        self.entries: list[list[int]] = []

    def evict(self, now: int) -> int:
        kept = [entry for entry in self.entries if entry[0] >= now // self.slot_us - self.span]
        dropped, self.entries = len(self.entries) - len(kept), kept
        return dropped

    def add(self, value: int, now: int, count: int = 1) -> bool:
        slot = now // self.slot_us
        if self.entries and self.entries[-1][0] >= slot:
            newest = self.entries[-1]
            newest[1] += value
            newest[2] = 0 if 0 in (newest[2], count) else newest[2] + count
            return False
        self.entries.append([slot, value, count])
        return True

    def total(self, now: int, window_us: int | None = None) -> int:
        self.evict(now)
        ticks = self.span if window_us is None else -(-window_us // self.slot_us)
        return sum(v for slot, v, _ in self.entries if slot >= now // self.slot_us - ticks)

    def stats(self, now: int, window_us: int | None = None) -> tuple[int, int | None]:
        ticks = self.span if window_us is None else -(-window_us // self.slot_us)
        counts = [n for slot, _, n in self.entries if slot >= now // self.slot_us - ticks]
        return self.total(now, window_us), None if 0 in counts else sum(counts)

    def series(self, now: int, step_us: int) -> tuple[int, list[int], list[int | None]]:
        self.evict(now)
        step_slots = step_us // self.slot_us
        current = now // self.slot_us // step_slots
        count = -(-self.span // step_slots) + 1
        sums: list[int] = [0] * count
        counts: list[int | None] = [0] * count
        for slot, v, n in self.entries:
            step = min(slot // step_slots, current) - current + count - 1
            sums[step] += v
            held = counts[step]
            counts[step] = None if held is None or n == 0 else held + n
        return (current - count + 1) * step_us, sums, counts


VALUES = st.one_of(
    st.integers(-1000, 1000),
    st.integers(-MAX, MAX),
    st.integers(-(2**64), 2**64),  # past int64: a ring must hand such a tick back to ints
    st.sampled_from([-(2**63), 2**63 - 1, 2**62]),
)


@st.composite
def ring_windows(draw: st.DrawFn) -> tuple[int, int]:
    """Spans of 1 to 60 slots (a ring from pack_at(span) = 4 to 14 live entries), or
    up to 400 (70 entries: a deque first, past SMALL_FLAT ints)."""
    resolution = draw(st.sampled_from([0, 1, 7, 1_000_000]))
    return (resolution or 1) * draw(st.integers(1, 60) | st.integers(61, 400)), resolution


@settings(max_examples=300, deadline=None)
@given(data=st.data(), window=ring_windows(), start=st.integers(0, 2 * 10**15))
def test_every_container_and_switch_gives_the_answers_of_the_plain_rules(
    data: st.DataObject, window: tuple[int, int], start: int
) -> None:
    """Bursts of one value a slot fill a key until it packs; gaps thin it out until it
    unpacks; the clock steps back and far ahead; subtotals overflow int64. After every
    operation the answers are those of the Ledger; as the storage does, each add is
    preceded by an evict at the same time."""
    window_us, resolution_us = window
    slot_us = resolution_us or 1
    span = window_us // slot_us
    rolling, model = RollingSum(window_us, resolution_us), Ledger(window_us, resolution_us)
    steps = st.one_of(
        st.integers(0, slot_us - 1),
        st.sampled_from([slot_us, window_us, window_us + slot_us, 2 * window_us]),
        st.integers(-window_us, 3 * window_us),  # a clock that steps back, too
    )
    burst = st.tuples(st.just("burst"), st.integers(1, span + 1), st.integers(1, 3), VALUES)
    # Counts as a batch or a restore brings them: 0 (not known, from older data), past
    # a byte and past two (a ring's counts widen), most often 1.
    counts = st.one_of(st.just(1), st.just(1), st.sampled_from([0, 2, 255, 256, 70_000, 2**32]))
    operation = st.one_of(
        st.tuples(st.just("add"), VALUES, counts),
        burst,
        burst,  # twice as likely: it is what packs a key
        st.tuples(st.just("step"), steps),
        st.tuples(st.just("read"), st.integers(1, window_us), st.sampled_from([k * slot_us for k in (1, 2, 5)])),
    )
    now, held = start + 10 * window_us, kind(rolling)
    for name, *args in data.draw(st.lists(operation, min_size=2, max_size=40)):
        if name == "step":
            now = max(0, now + args[0])
            continue
        adds = [(args[0], now, args[1])] if name == "add" else []
        if name == "burst":  # a value every ``every`` slots, ``slots`` of them
            slots, every, value = args
            adds = [(value, now + k * every * slot_us, 1) for k in range(slots)]
            now = adds[-1][1]
        for value, at, count in adds:
            assert rolling.evict(at) == model.evict(at)
            if kind(rolling) != held:
                event(f"{held} -> {kind(rolling)} as entries left")
            assert rolling.add(value, at, count) == model.add(value, at, count)
            if kind(rolling) != held:
                event(f"{held} -> {kind(rolling)} on an add")
            held = kind(rolling)
        sub_window, step_us = args[-2:] if name == "read" else (window_us, slot_us)
        assert rolling.total(now) == model.total(now)
        assert len(rolling) == len(model.entries)
        assert rolling.total(now, sub_window) == model.total(now, sub_window)
        assert rolling.stats(now) == model.stats(now)
        assert rolling.stats(now, sub_window) == model.stats(now, sub_window)
        assert rolling.series(now, step_us, with_counts=True) == model.series(now, step_us)
        assert rolling.series(now, step_us) == (*model.series(now, step_us)[:2], None)
        assert list(rolling.entries()) == [(slot * slot_us, v, n) for slot, v, n in model.entries]
        assert rolling.expired(now) == (not model.entries)
        if kind(rolling) != held:
            event(f"{held} -> {kind(rolling)} as entries left")
        held = kind(rolling)
