"""Query parameters (``?window=``, ``?step=``, ``?limit=``, ``?with=``) and the series-step policy."""

from __future__ import annotations

import re

from ..core.units import ceil_div, format_duration, parse_duration_us
from .errors import Malformed, shown

DEFAULT_LIMIT, MAX_LIMIT = 1000, 10_000
MAX_POINTS = 3600
DEFAULT_STEP_US = 60_000_000
_LIMIT = re.compile(r"[0-9]{1,6}")


def parse_window_param(raw: str, window_us: int, slot_us: int) -> int:
    """``?window=``: above 0 and at most RINGSUM_WINDOW, rounded up to whole ticks."""
    hint = f"window must be a duration above 0 and at most RINGSUM_WINDOW ({format_duration(window_us)}), like 15m"
    micros = _duration_param(raw, hint)
    if not 0 < micros <= window_us:
        raise Malformed(f"{hint}; got {shown(raw)}")
    return ceil_div(micros, slot_us) * slot_us


def min_step_us(window_us: int, slot_us: int) -> int:
    """The shortest step that cuts the window into at most MAX_POINTS points.

    A series has ceil(window / step) + 1 points (the oldest step is partly outside
    the window), so the step needs ceil(window / step) <= MAX_POINTS - 1.
    """
    ticks = window_us // slot_us
    return max(1, ceil_div(ticks, MAX_POINTS - 1)) * slot_us


def default_step_us(window_us: int, slot_us: int) -> int:
    """One minute, as nearly as the window and tick allow."""
    one_minute_in_ticks = ceil_div(min(DEFAULT_STEP_US, window_us), slot_us) * slot_us
    return max(one_minute_in_ticks, min_step_us(window_us, slot_us))


def parse_step_param(raw: str | None, window_us: int, slot_us: int) -> int:
    """``?step=``: a whole number of ticks, at most the window, at most MAX_POINTS points."""
    if raw is None:
        return default_step_us(window_us, slot_us)
    shortest = min_step_us(window_us, slot_us)
    window = format_duration(window_us)
    hint = f"step must be a duration from {format_duration(shortest)} to the window ({window}), like 1m"
    micros = _duration_param(raw, hint)
    if micros % slot_us:
        raise Malformed(f"step must be a whole number of ticks (RINGSUM_RESOLUTION {format_duration(slot_us)})")
    if micros < shortest:
        raise Malformed(
            f"step must be at least {format_duration(shortest)}: shorter steps cut the window ({window}) "
            f"into more than {MAX_POINTS} points"
        )
    if micros > window_us:
        raise Malformed(f"step must be at most the window ({window})")
    return micros


def parse_with_param(raw: str | None) -> bool:
    """``?with=count`` on a series: each point carries its step's count too."""
    if raw is None:
        return False
    if raw != "count":
        raise Malformed(f"with must be count (each point then carries its step's count too); got {shown(raw)}")
    return True


def parse_limit_param(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if _LIMIT.fullmatch(raw) is None or not 1 <= int(raw) <= MAX_LIMIT:
        raise Malformed(f"limit must be a whole number from 1 to {MAX_LIMIT}; got {shown(raw)}")
    return int(raw)


def _duration_param(raw: str, hint: str) -> int:
    # Stricter than settings: exactly the documented pattern, no spaces, ASCII digits.
    try:
        if not raw.isascii() or raw != raw.strip():
            raise ValueError(raw)
        return parse_duration_us(raw)
    except ValueError:
        raise Malformed(f"{hint}; got {shown(raw)}") from None
