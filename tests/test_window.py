"""The window (SPEC §2): RollingSum against a naive model, and the exact boundaries
through HTTP with a frozen clock, in exact mode and tick mode."""

from __future__ import annotations

import sys
from collections import deque
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time
from helpers import total
from hypothesis import given, settings
from hypothesis import strategies as st

from ringsum.units import parse_duration_us
from ringsum.window import SMALL_FLAT, RollingSum

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

    def series(self, now: int, step_us: int) -> tuple[int, list[int]]:
        count = -(-self.window_us // step_us) + 1  # the oldest step starts before the window does
        first = now // step_us - count + 1
        sums = [0] * count
        for t, v in self.live(now):
            sums[t // step_us - first] += v
        return first * step_us, sums


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
            live_slots = {t // model.slot_us for t, _ in model.live(now)}
            assert len(rolling) == len(live_slots)  # one entry per live tick: nothing stale kept
            if resolution_us:
                assert len(rolling) <= window_us // resolution_us + 1
        elif operation == "sub_total":
            assert rolling.total(now, args[0]) == model.total(now, args[0])
        elif operation == "series":
            start_us, sums = rolling.series(now, args[0])
            assert (start_us, sums) == model.series(now, args[0])
            assert sum(sums) == model.total(now)
    # What a snapshot saves rebuilds the same sums.
    restored = RollingSum(window_us, resolution_us)
    for time_us, subtotal in rolling.entries():
        restored.add(subtotal, time_us)
    for later in (now, now + (resolution_us or 1), now + window_us):
        assert restored.total(later) == model.total(later)


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

    def counts(now: int) -> bool:  # SPEC §2, literally
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


# -- the container: a list while few, a deque past SMALL_FLAT -------------------


def test_a_key_with_one_entry_costs_a_few_hundred_bytes_not_a_deque_block() -> None:
    rolling = RollingSum(window_us=HOUR_US, resolution_us=1_000_000)
    rolling.add(3, now_us=START_US)
    held = sys.getsizeof(rolling) + sys.getsizeof(rolling._flat) + sum(map(sys.getsizeof, rolling._flat))
    assert held <= 250
    assert sys.getsizeof(deque()) > 500  # what each key paid before, for its empty first block
    assert rolling.total(START_US) == 3
    assert list(rolling.entries()) == [(START_US, 3)]


@pytest.mark.parametrize("resolution_us", [0, 1_000])
def test_sums_stay_exact_as_entries_grow_past_the_list_and_age_out_of_the_deque(resolution_us: int) -> None:
    slot_us = resolution_us or 1
    window_us = 100 * slot_us  # 100 live slots: well past SMALL_FLAT ints
    rolling, model = RollingSum(window_us, resolution_us), NaiveWindow(window_us, resolution_us)
    for step in range(250):
        now = START_US + step * slot_us
        rolling.evict(now)
        rolling.add(step, now)
        model.values.append((now, step))
        assert rolling.total(now) == model.total(now)
        assert rolling.total(now, 7 * slot_us) == model.total(now, 7 * slot_us)
        assert len(rolling) == min(step + 1, 101)
        assert isinstance(rolling._flat, deque) == (step + 1 > SMALL_FLAT // 2)
    assert [value for _, value in rolling.entries()] == list(range(149, 250))
    now += window_us + slot_us
    assert rolling.evict(now) == 101
    assert (rolling.total(now), len(rolling)) == (0, 0)


def test_evicting_from_the_list_drops_only_the_entries_that_left() -> None:
    rolling = RollingSum(window_us=10, resolution_us=1)
    for t in range(START_US, START_US + 5):
        rolling.add(1, t)
    assert type(rolling._flat) is list
    assert rolling.evict(START_US + 12) == 2  # slots 0 and 1 are more than 10 behind
    assert [t for t, _ in rolling.entries()] == [START_US + 2, START_US + 3, START_US + 4]
    assert rolling.total(START_US + 12) == 3
