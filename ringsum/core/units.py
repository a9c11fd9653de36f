"""Durations and sizes as people write them: ``500ms``, ``90s``, ``15m``, ``1h``, ``1MiB``."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<unit>us|ms|s|m|h|d)?")
_MICROSECONDS = {"us": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}

_SIZE = re.compile(r"(?P<number>\d+)(?P<unit>B|KB|KiB|MB|MiB|GB|GiB)?")
_BYTES = {"B": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2, "GB": 1000**3, "GiB": 1024**3}

MAX_DURATION_US = 366 * _MICROSECONDS["d"]


def parse_duration_us(text: str | int | float) -> int:
    """A duration in whole microseconds; ValueError when it is not one we can read.

    A bare number is seconds. Anything finer than a microsecond, negative or longer
    than a year is refused rather than silently rounded.
    """
    match = _DURATION.fullmatch(str(text).strip())
    if match is None:
        raise ValueError(text)
    try:
        micros = Decimal(match["number"]) * _MICROSECONDS[match["unit"] or "s"]
    except InvalidOperation as error:
        raise ValueError(text) from error
    if micros != micros.to_integral_value() or micros > MAX_DURATION_US:
        raise ValueError(text)
    return int(micros)


def parse_size(text: str | int) -> int:
    """A byte count: a bare integer or one with a unit (``64KiB``, ``1MiB``)."""
    match = _SIZE.fullmatch(str(text).strip())
    if match is None:
        raise ValueError(text)
    return int(match["number"]) * _BYTES[match["unit"] or "B"]


def ceil_div(numerator: int, denominator: int) -> int:
    """``ceil(numerator / denominator)`` in exact integer arithmetic: a float division
    would round large microsecond counts."""
    return -(-numerator // denominator)


def format_duration(micros: int) -> str:
    """The shortest exact spelling of a duration, for messages and docs."""
    for unit in ("d", "h", "m", "s", "ms"):
        if micros % _MICROSECONDS[unit] == 0:
            return f"{micros // _MICROSECONDS[unit]}{unit}"
    return f"{micros}us"
