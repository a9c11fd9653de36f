"""ringsum.inputs.params and ringsum.core.units.ceil_div: the series-step policy in numbers. The query
parameters themselves are tested through HTTP in test_api_series.py and test_api_sum_window.py."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from ringsum.core.units import ceil_div
from ringsum.inputs.params import MAX_POINTS, default_step_us, min_step_us

HOUR_US, SECOND_US = 3_600_000_000, 1_000_000


@given(numerator=st.integers(-(10**30), 10**30), denominator=st.integers(1, 10**20))
def test_ceil_div_is_the_exact_ceiling(numerator: int, denominator: int) -> None:
    quotient = ceil_div(numerator, denominator)
    assert (quotient - 1) * denominator < numerator <= quotient * denominator
    if abs(numerator) < 2**50:
        assert quotient == math.ceil(numerator / denominator)


@given(ticks=st.integers(1, 10**7), slot_s=st.sampled_from([1, 2, 5, 60]))
def test_the_shortest_step_keeps_a_series_within_max_points(ticks: int, slot_s: int) -> None:
    window_us, slot_us = ticks * slot_s * SECOND_US, slot_s * SECOND_US  # a window is whole ticks
    step = min_step_us(window_us, slot_us)
    assert step % slot_us == 0
    assert ceil_div(window_us, step) + 1 <= MAX_POINTS
    if step > slot_us:  # one tick shorter would be too many points
        assert ceil_div(window_us, step - slot_us) + 1 > MAX_POINTS


def test_the_default_step_is_a_minute_when_the_window_allows() -> None:
    assert default_step_us(HOUR_US, SECOND_US) == 60 * SECOND_US
    assert default_step_us(30 * SECOND_US, SECOND_US) == 30 * SECOND_US  # never longer than the window
    assert default_step_us(HOUR_US, 7 * SECOND_US) == 63 * SECOND_US  # rounded up to whole ticks
    assert default_step_us(30 * 86_400 * SECOND_US, SECOND_US) == min_step_us(30 * 86_400 * SECOND_US, SECOND_US)
