"""The write-ahead log of the memory storage: every accepted write, framed, in segment files.

A segment starts with a header (file_header.py: magic, format version, its own
sequence, checksummed). Each record after it is
framed as ``length (u32) | crc32 of the body (u32) | body``, so a torn or garbled
tail is found and cut off at the last whole record. A body is
``type (u8) | flags (u8) | time_us (i64) | payload``: records carry the time they
were recorded at, so a replay puts every value back in its own slot.

Extensible without a format break: flag bit ``n`` set means one more optional field
follows the payload, ``length (u32) | bytes``, in bit order; a reader skips the ones
it does not know. Bit 0 is the idempotency marker of a SINGLE or BATCH write
(``Idempotency-Key``): inside the record of the write it guards, so a replay
restores both or neither. A change a reader must understand bumps the format
version (file_header.FORMAT_VERSION), and an older reader refuses such a file by name.

A BATCH of no events is a clock mark: it records only that the window's clock
(clock.py) read its time, so a restart never goes below it (written after the wall
clock stepped, and once a second while the window's clock runs ahead of it).
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from zlib import crc32

from . import file_header
from .base import Marker

MAGIC = b"RINGSUMJ"
FRAME = struct.Struct("<II")  # body length, crc32 of the body
MAX_BODY = 16 * 1024 * 1024  # far above a 10,000-event batch: a longer "length" is garbage
_RECORD = struct.Struct("<BBq")  # type, flags, time_us
_VALUE_KEY = struct.Struct("<qH")  # value, key length (then the key, ASCII)
_COUNT = struct.Struct("<I")
_KEY = struct.Struct("<H")
_FIELD = struct.Struct("<I")
_MARKER = struct.Struct("<B32sH")  # id length, fingerprint, status (then the id, ASCII, then the body)
MARKER_FIELD = 0b1  # flag bit 0

SINGLE, BATCH, DELETE = 1, 2, 3


@dataclass(frozen=True)
class Record:
    """One logged write: ``events`` for SINGLE and BATCH, ``key`` for DELETE."""

    kind: int
    time_us: int
    events: Sequence[tuple[str, int]] = ()
    key: str = ""
    marker: Marker | None = None  # the write's idempotency marker, logged with it


# -- encoding ------------------------------------------------------------------------


def framed(body: bytes) -> bytes:
    return FRAME.pack(len(body), crc32(body)) + body


def pack_marker(marker: Marker) -> bytes:
    """An idempotency marker as the log and the snapshot hold it."""
    encoded = marker.id.encode()
    return _MARKER.pack(len(encoded), marker.fingerprint, marker.status) + encoded + marker.body


def unpack_marker(data: bytes) -> Marker:
    length, fingerprint, status = _MARKER.unpack_from(data)
    start = _MARKER.size
    if len(data) < start + length:
        raise ValueError("marker cut short")
    return Marker(data[start : start + length].decode("ascii"), fingerprint, status, data[start + length :])


def _marker_field(marker: Marker) -> bytes:
    packed = pack_marker(marker)
    return _FIELD.pack(len(packed)) + packed


def single(time_us: int, key: str, value: int, marker: Marker | None = None) -> bytes:
    encoded = key.encode()
    if marker is None:
        return framed(_RECORD.pack(SINGLE, 0, time_us) + _VALUE_KEY.pack(value, len(encoded)) + encoded)
    head = _RECORD.pack(SINGLE, MARKER_FIELD, time_us) + _VALUE_KEY.pack(value, len(encoded))
    return framed(head + encoded + _marker_field(marker))


def batch(time_us: int, events: Sequence[tuple[str, int]], marker: Marker | None = None) -> bytes:
    parts = [_RECORD.pack(BATCH, 0 if marker is None else MARKER_FIELD, time_us), _COUNT.pack(len(events))]
    for key, value in events:
        encoded = key.encode()
        parts.append(_VALUE_KEY.pack(value, len(encoded)))
        parts.append(encoded)
    if marker is not None:
        parts.append(_marker_field(marker))
    return framed(b"".join(parts))


def clock_mark(time_us: int) -> bytes:
    """A record that changes nothing but says the window's clock reached ``time_us``."""
    return batch(time_us, [])


def delete(time_us: int, key: str) -> bytes:
    encoded = key.encode()
    return framed(_RECORD.pack(DELETE, 0, time_us) + _KEY.pack(len(encoded)) + encoded)


# -- decoding ------------------------------------------------------------------------


def _decode(body: bytes) -> Record:
    """The record in ``body``; ValueError/struct.error/UnicodeError when it is not one."""
    kind, flags, time_us = _RECORD.unpack_from(body)
    offset = _RECORD.size
    if kind == DELETE:
        (length,) = _KEY.unpack_from(body, offset)
        offset += _KEY.size
        key = body[offset : offset + length].decode()
        record, offset = Record(DELETE, time_us, key=key), offset + length
    elif kind in (SINGLE, BATCH):
        count = 1
        if kind == BATCH:
            (count,) = _COUNT.unpack_from(body, offset)
            offset += _COUNT.size
        events = []
        for _ in range(count):
            value, length = _VALUE_KEY.unpack_from(body, offset)
            offset += _VALUE_KEY.size
            events.append((body[offset : offset + length].decode(), value))
            offset += length
        record = Record(kind, time_us, events)
    else:
        raise ValueError(f"unknown record type {kind}")
    marker = None
    while flags:  # optional fields, each one length-prefixed; those of later versions are skipped
        (length,) = _FIELD.unpack_from(body, offset)
        start, offset = offset + _FIELD.size, offset + _FIELD.size + length
        if flags & MARKER_FIELD and kind != DELETE:  # bit 0: always the first field
            marker = unpack_marker(body[start:offset])
        flags &= flags - 1
    if offset != len(body):
        raise ValueError("record length does not match its content")
    return record if marker is None else replace(record, marker=marker)


@dataclass
class Segment:
    """What a segment file holds: its whole records, and where and why reading stopped early."""

    records: list[Record]
    good_size: int  # bytes up to the end of the last whole record
    damage: str | None = None
    header: file_header.Header | None = None  # None: an empty file


def read_segment(path: Path) -> Segment:
    """Every whole record of ``path``, up to the first torn or garbled one. A header that
    fails its checksum is damage too, but the records after it are still read."""
    data = path.read_bytes()
    if not data:
        return Segment([], 0)
    header = file_header.read(path, data, MAGIC, number_in_v1=False)
    if not header.size:
        return Segment([], 0, header.damage, header)
    records: list[Record] = []
    offset = header.size
    while offset < len(data):
        if len(data) - offset < FRAME.size:
            return Segment(records, offset, f"a record is cut short at byte {offset}", header)
        length, checksum = FRAME.unpack_from(data, offset)
        body = data[offset + FRAME.size : offset + FRAME.size + length]
        if length > MAX_BODY or len(body) < length:
            return Segment(records, offset, f"a record is cut short at byte {offset}", header)
        if crc32(body) != checksum:
            return Segment(records, offset, f"the record at byte {offset} fails its checksum", header)
        try:
            records.append(_decode(body))
        except (ValueError, struct.error) as error:
            return Segment(records, offset, f"the record at byte {offset} is not readable ({error})", header)
        offset += FRAME.size + length
    return Segment(records, offset, header.damage, header)


# -- writing -------------------------------------------------------------------------


def fsync_directory(path: Path) -> None:
    """Make a create, rename or unlink in ``path`` itself durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_segment(path: Path, sequence: int) -> int:
    """A new segment file holding just its header, on the disk (fsynced, name included);
    its fd, open for appending. Made whole under a temporary name, then renamed to its
    own (which must not exist: the data dir's owner is its only writer): a segment is
    never seen with 0 bytes, so one that has them was cut (inventory.py)."""
    if path.exists():
        raise FileExistsError(errno.EEXIST, "a log segment of that number exists already", str(path))
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    try:
        os.write(fd, file_header.pack(MAGIC, sequence))
        os.fsync(fd)
        os.rename(temporary, path)
        fsync_directory(path.parent)
    except BaseException:
        os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
    return fd
