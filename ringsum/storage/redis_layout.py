"""Key layout 2 of the Redis storage, read in Python: the names, and the bytes the Lua
scripts write (``lua/common.lua`` describes them), decoded exactly.

A metric key ``K`` is one string, ``ringsum:{K}:w``: a header (form, slots held, total,
newest and oldest slot), then either a log of ``(slot, cell)`` pairs (few slots, and
every key in exact mode) or a ring of one cell per slot of the window (a busy key in
tick mode: 12 bytes a slot). A cell is a slot's subtotal and count (0: not known, a
slot converted from layout 1, which kept no counts). Layout 1 (``ringsum:{K}:h``, a hash of subtotals, and
``ringsum:{K}:z``, a sorted set of slots) is only read by ``upgrade.py``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

NAMESPACE = "ringsum:"
LAYOUT_KEY, LAYOUT_VERSION = f"{NAMESPACE}layout", 2
STRING_SUFFIX = "}:w"
LAYOUT_1_SUFFIXES = ("}:h", "}:z")  # hash, sorted set

_HEADER = struct.Struct(">cIIqIqqI")  # form, count, cells, total hi, total lo, head, oldest, offset
_PAIR = struct.Struct(">qQI")  # slot, cell (subtotal, count)
_CELL = struct.Struct(">QI")  # subtotal, count
_TOTAL = struct.Struct(">qI")
_COUNT = struct.Struct(">I")
_BIAS = 2**63  # a cell is the subtotal plus 2^63: eight zero bytes are "no slot"
HEADER_SIZE = _HEADER.size
COUNT_RANGE = (1, 4)  # GETRANGE bounds of the header's count of slots held
INT64_MAX = 2**63 - 1


def string_key(key: str) -> str:
    """The Redis string holding metric key ``key``; the ``{key}`` hash tag keeps it on
    the Cluster slot of the key's markers."""
    return f"{NAMESPACE}{{{key}{STRING_SUFFIX}"


def metric_key(name: bytes | str) -> str:
    """The metric key of a Redis name written by ``string_key`` (or a layout-1 name)."""
    text = name.decode() if isinstance(name, bytes) else name
    return text[len(NAMESPACE) + 1 : -len(STRING_SUFFIX)]


def layout_1_keys(key: str) -> tuple[str, str]:
    """Layout 1's hash and sorted set of metric key ``key``."""
    return tuple(f"{NAMESPACE}{{{key}{suffix}" for suffix in LAYOUT_1_SUFFIXES)  # type: ignore[return-value]


def packed_value(value: int, count: int = 1) -> bytes:
    """A value, the sum of ``count`` values, as the record script takes it: a
    big-endian int64 and uint32 (OverflowError past them)."""
    if not -INT64_MAX <= value <= INT64_MAX:
        raise OverflowError(value)
    return value.to_bytes(8, "big", signed=True) + count.to_bytes(4, "big")


def total(packed: bytes) -> int:
    """A total as the totals script answers it: int64 hi, uint32 lo."""
    hi, lo = _TOTAL.unpack(packed)
    return hi * 2**32 + lo


def slots_held(packed_count: bytes) -> int:
    """The header's count of slots held, read with GETRANGE ``COUNT_RANGE``."""
    return _COUNT.unpack(packed_count)[0] if len(packed_count) == _COUNT.size else 0


@dataclass(frozen=True)
class Header:
    form: bytes  # b"L" log, b"R" ring
    count: int
    cells: int
    total: int
    head: int
    oldest: int
    offset: int


def header(string: bytes) -> Header:
    form, count, cells, hi, lo, head, oldest, offset = _HEADER.unpack_from(string)
    return Header(form, count, cells, hi * 2**32 + lo, head, oldest, offset)


def entries(string: bytes) -> Iterator[tuple[int, int, int]]:
    """``(slot, subtotal, count)`` of every slot a key's string holds, oldest first."""
    if not string:
        return
    found = header(string)
    if found.form == b"L":
        for slot, cell, count in _PAIR.iter_unpack(string[found.offset : found.offset + _PAIR.size * found.count]):
            yield slot, cell - _BIAS, count
        return
    size = _CELL.size
    ring = string[HEADER_SIZE : HEADER_SIZE + size * found.cells]
    start = size * (found.oldest % found.cells)
    oldest_first = ring[start:] + ring[:start]  # cell k holds slot oldest + k
    for k, (cell, count) in enumerate(_CELL.iter_unpack(oldest_first[: size * (found.head - found.oldest + 1)])):
        if cell:
            yield found.oldest + k, cell - _BIAS, count
