"""Memory storage snapshots: the live window as of a checkpoint, written atomically.

Binary, framed like the log (see journal.py): a header (file_header.py) whose number
is ``covers``, the sequence of the last log segment folded in (the segments up to it
are replayed no more, even if a crash left them behind), then one record per key (each
entry: time, subtotal and count), then one per live idempotency marker (with the time it
expires), then (format 2) the window's clock as of the snapshot (so a restart never goes
below it, clock.py), then an end record with the key count, so a cut-short file is told
apart from a whole one, and (format 2) covers
again. A damaged snapshot still yields every whole key before the damage; one whose
covers cannot be known (header and end both damaged, or disagreeing) says so with
``covers = None``, and is never guessed at.

Key records of type KEY and KEY_WIDE (format 1, and format 2 before counts were kept)
hold no counts: their entries are read with count 0, "not known", never made up.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from zlib import crc32

from . import file_header
from .base import Marker
from .journal import FRAME, framed, fsync_directory, pack_marker, unpack_marker

MAGIC = b"RINGSUMS"
_KEY_HEAD = struct.Struct("<BHI")  # type, key length, entry count (then key, entries)
_END_V1 = struct.Struct("<BQ")  # type, key count
_END = struct.Struct("<BQQ")  # type, key count, covers (format 2: as the header says, checked twice)
_MARKER_HEAD = struct.Struct("<Bq")  # type, expires at µs (then the marker, packed as in the log)
KEY, KEY_WIDE, END, MARKER, CLOCK = 1, 2, 3, 4, 7  # KEY_WIDE: subtotals past 64 bits, each length-prefixed
# Entries with their counts (written): (time i64, subtotal i64, count u32) each, or in
# the wide form (time i64, length u16, subtotal, count u64) when one does not fit.
KEY_COUNTED, KEY_COUNTED_WIDE = 5, 6
_COUNTED = struct.Struct("<qqI")
_WIDE_HEAD = struct.Struct("<qH")
_CLOCK = struct.Struct("<Bq")  # type, the window's clock in µs
TEMPORARY_SUFFIX = ".tmp"
MAX_KEY_BODY = 1 << 31  # a key's entries may exceed a log record's bound (exact mode)

Entries = list[tuple[int, int, int]]  # (time_us, subtotal, count; 0: not known), oldest first


def _key_record(key: str, entries: Entries) -> bytes:
    encoded = key.encode()
    flat = [number for entry in entries for number in entry]
    try:
        packed = struct.pack("<" + "qqI" * len(entries), *flat)
        kind = KEY_COUNTED
    except struct.error:
        parts = []
        for time_us, subtotal, count in entries:
            raw = subtotal.to_bytes((subtotal.bit_length() + 8) // 8, "little", signed=True)
            parts.append(_WIDE_HEAD.pack(time_us, len(raw)) + raw + count.to_bytes(8, "little"))
        packed, kind = b"".join(parts), KEY_COUNTED_WIDE
    return framed(_KEY_HEAD.pack(kind, len(encoded), len(entries)) + encoded + packed)


def write_snapshot(
    directory: Path,
    name: str,
    covers: int,
    keys: Iterable[tuple[str, Entries]],
    markers: Iterable[tuple[int, Marker]] = (),
    clock_us: int = 0,
) -> None:
    """Write to a temporary file in ``directory``, fsync, rename over ``name``, fsync the
    directory: a crash at any point leaves the previous snapshot whole (and at most a
    temporary file, which the next start removes). ``clock_us``: the window's clock as
    of the snapshot (0: not known)."""
    fd, temporary = tempfile.mkstemp(prefix=f"{name}.", suffix=TEMPORARY_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(file_header.pack(MAGIC, covers))
            count = 0
            for key, entries in keys:
                file.write(_key_record(key, entries))
                count += 1
            for expires, marker in markers:
                file.write(framed(_MARKER_HEAD.pack(MARKER, expires) + pack_marker(marker)))
            if clock_us:
                file.write(framed(_CLOCK.pack(CLOCK, clock_us)))
            file.write(framed(_END.pack(END, count, covers)))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, directory / name)
        fsync_directory(directory)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass
class Snapshot:
    """What a snapshot file holds; ``damage`` says why reading stopped early (or what
    else is wrong). ``covers`` None: which segments it holds cannot be known."""

    covers: int | None = 0
    version: int = 0  # the file's format version (0: no file)
    keys: dict[str, Entries] = field(default_factory=dict)
    markers: list[tuple[int, Marker]] = field(default_factory=list)  # (expires at µs, marker), oldest first
    damage: str | None = None
    clock_us: int = 0  # the window's clock when it was written (0: not said, as in format 1)


def read_snapshot(path: Path) -> Snapshot:
    """The keys of ``path`` (an empty Snapshot when there is none), every whole key
    up to any damage. Raises UnsupportedDataFormat for a newer format."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Snapshot()
    header = file_header.read(path, data, MAGIC, number_in_v1=True)
    if not header.size:
        return Snapshot(covers=None, damage=header.damage)
    snapshot = Snapshot(covers=header.number, version=header.version, damage=header.damage)
    offset = header.size
    while True:
        if len(data) - offset < FRAME.size:
            return _stopped(snapshot, f"it is cut short at byte {offset}")
        length, checksum = FRAME.unpack_from(data, offset)
        body = data[offset + FRAME.size : offset + FRAME.size + length]
        if length > MAX_KEY_BODY or len(body) < length:
            return _stopped(snapshot, f"it is cut short at byte {offset}")
        if crc32(body) != checksum:
            return _stopped(snapshot, f"the record at byte {offset} fails its checksum")
        try:
            if body[0] == END:
                _end(snapshot, body, header.version, len(data) - (offset + FRAME.size + length))
                return snapshot
            if body[0] == CLOCK:
                _, snapshot.clock_us = _CLOCK.unpack(body)
                offset += FRAME.size + length
                continue
            if body[0] == MARKER:
                (_, expires), marker = _MARKER_HEAD.unpack_from(body), unpack_marker(body[_MARKER_HEAD.size :])
                snapshot.markers.append((expires, marker))
                offset += FRAME.size + length
                continue
            key, entries = _read_key(body)
        except (ValueError, struct.error, IndexError) as error:
            return _stopped(snapshot, f"the record at byte {offset} is not readable ({error})")
        snapshot.keys[key] = entries
        offset += FRAME.size + length


def _stopped(snapshot: Snapshot, damage: str) -> Snapshot:
    """Reading stopped at ``damage``: what came before it, and the first damage seen."""
    snapshot.damage = f"{snapshot.damage}, and {damage}" if snapshot.damage else damage
    return snapshot


def _end(snapshot: Snapshot, body: bytes, version: int, after: int) -> None:
    """Check the end record (key count; format 2: covers, which stands in for a header
    that failed its checksum); ``after``: bytes that follow it."""
    if version == 1:
        _, count = _END_V1.unpack(body)
    else:
        _, count, covers = _END.unpack(body)
        if snapshot.covers is None:
            snapshot.covers = covers  # the header's damage stays said: the file is rewritten
        elif covers != snapshot.covers:
            _stopped(snapshot, f"it says it covers segment {snapshot.covers} at its start and {covers} at its end")
            snapshot.covers = None
            return
    if count != len(snapshot.keys):
        _stopped(snapshot, f"it ends with {count} keys but holds {len(snapshot.keys)}")
    elif after:
        _stopped(snapshot, f"{after} unknown bytes follow its end")


def _read_key(body: bytes) -> tuple[str, Entries]:
    kind, key_length, count = _KEY_HEAD.unpack_from(body)
    start = _KEY_HEAD.size
    key = body[start : start + key_length].decode()
    offset = start + key_length
    if kind in (KEY, KEY_COUNTED):
        size = 16 if kind == KEY else _COUNTED.size
        if len(body) - offset != size * count:
            raise ValueError("entry count does not match the record length")
        if kind == KEY:  # no counts kept: each one not known
            flat = struct.unpack_from(f"<{2 * count}q", body, offset)
            return key, [(time_us, subtotal, 0) for time_us, subtotal in zip(flat[::2], flat[1::2], strict=True)]
        return key, list(_COUNTED.iter_unpack(body[offset:]))
    if kind not in (KEY_WIDE, KEY_COUNTED_WIDE):
        raise ValueError(f"unknown record type {kind}")
    entries = []
    for _ in range(count):
        time_us, size = _WIDE_HEAD.unpack_from(body, offset)
        offset += _WIDE_HEAD.size
        subtotal = int.from_bytes(body[offset : offset + size], "little", signed=True)
        offset += size
        counted = 0
        if kind == KEY_COUNTED_WIDE:
            counted = int.from_bytes(body[offset : offset + 8], "little")
            offset += 8
        entries.append((time_us, subtotal, counted))
    if offset != len(body):
        raise ValueError("entry count does not match the record length")
    return key, entries
