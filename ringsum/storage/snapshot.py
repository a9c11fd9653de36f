"""Memory storage snapshots: the live window as of a checkpoint, written atomically.

Binary, framed like the log (see journal.py): a header ``magic | format version |
covers``, where ``covers`` is the sequence of the last log segment folded in (the
segments up to it are replayed no more, even if a crash left them behind), then one
record per key, then one per live idempotency marker (with the time it expires), then
an end record with the key count, so a cut-short file is told
apart from a whole one. A damaged snapshot still yields every whole key before the
damage.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from zlib import crc32

from .base import Marker
from .journal import FORMAT_VERSION, FRAME, HEADER, check_header, framed, fsync_directory, pack_marker, unpack_marker

MAGIC = b"RINGSUMS"
_COVERS = struct.Struct("<Q")
_KEY_HEAD = struct.Struct("<BHI")  # type, key length, entry count (then key, entries)
_END = struct.Struct("<BQ")  # type, key count
_MARKER_HEAD = struct.Struct("<Bq")  # type, expires at µs (then the marker, packed as in the log)
KEY, KEY_WIDE, END, MARKER = 1, 2, 3, 4  # KEY_WIDE: subtotals past 64 bits, each length-prefixed
TEMPORARY_SUFFIX = ".tmp"
MAX_KEY_BODY = 1 << 31  # a key's entries may exceed a log record's bound (exact mode)

Entries = list[tuple[int, int]]  # (time_us, subtotal), oldest first


def _key_record(key: str, entries: Entries) -> bytes:
    encoded = key.encode()
    flat = [number for pair in entries for number in pair]
    try:
        packed = struct.pack(f"<{len(flat)}q", *flat)
        kind = KEY
    except struct.error:
        parts = []
        for time_us, subtotal in entries:
            raw = subtotal.to_bytes((subtotal.bit_length() + 8) // 8, "little", signed=True)
            parts.append(struct.pack("<qH", time_us, len(raw)) + raw)
        packed, kind = b"".join(parts), KEY_WIDE
    return framed(_KEY_HEAD.pack(kind, len(encoded), len(entries)) + encoded + packed)


def write_snapshot(
    directory: Path,
    name: str,
    covers: int,
    keys: Iterable[tuple[str, Entries]],
    markers: Iterable[tuple[int, Marker]] = (),
) -> None:
    """Write to a temporary file in ``directory``, fsync, rename over ``name``, fsync the
    directory: a crash at any point leaves the previous snapshot whole (and at most a
    temporary file, which the next start removes)."""
    fd, temporary = tempfile.mkstemp(prefix=f"{name}.", suffix=TEMPORARY_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(HEADER.pack(MAGIC, FORMAT_VERSION) + _COVERS.pack(covers))
            count = 0
            for key, entries in keys:
                file.write(_key_record(key, entries))
                count += 1
            for expires, marker in markers:
                file.write(framed(_MARKER_HEAD.pack(MARKER, expires) + pack_marker(marker)))
            file.write(framed(_END.pack(END, count)))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, directory / name)
        fsync_directory(directory)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass
class Snapshot:
    """What a snapshot file holds; ``damage`` says why reading stopped early."""

    covers: int = 0
    keys: dict[str, Entries] = field(default_factory=dict)
    markers: list[tuple[int, Marker]] = field(default_factory=list)  # (expires at µs, marker), oldest first
    damage: str | None = None


def read_snapshot(path: Path) -> Snapshot:
    """The keys of ``path`` (an empty Snapshot when there is none), every whole key
    up to any damage. Raises UnsupportedDataFormat for a newer format."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Snapshot()
    problem = check_header(path, data, MAGIC)
    if problem is not None or len(data) < HEADER.size + _COVERS.size:
        return Snapshot(damage=problem or "the file header is cut short")
    snapshot = Snapshot(covers=_COVERS.unpack_from(data, HEADER.size)[0])
    offset = HEADER.size + _COVERS.size
    while True:
        if len(data) - offset < FRAME.size:
            snapshot.damage = f"it is cut short at byte {offset}"
            return snapshot
        length, checksum = FRAME.unpack_from(data, offset)
        body = data[offset + FRAME.size : offset + FRAME.size + length]
        if length > MAX_KEY_BODY or len(body) < length:
            snapshot.damage = f"it is cut short at byte {offset}"
            return snapshot
        if crc32(body) != checksum:
            snapshot.damage = f"the record at byte {offset} fails its checksum"
            return snapshot
        try:
            if body[0] == END:
                _, count = _END.unpack(body)
                end = offset + FRAME.size + length
                if count != len(snapshot.keys):
                    snapshot.damage = f"it ends with {count} keys but holds {len(snapshot.keys)}"
                elif end != len(data):
                    snapshot.damage = f"{len(data) - end} unknown bytes follow its end"
                return snapshot
            if body[0] == MARKER:
                (_, expires), marker = _MARKER_HEAD.unpack_from(body), unpack_marker(body[_MARKER_HEAD.size :])
                snapshot.markers.append((expires, marker))
                offset += FRAME.size + length
                continue
            key, entries = _read_key(body)
        except (ValueError, struct.error, IndexError) as error:
            snapshot.damage = f"the record at byte {offset} is not readable ({error})"
            return snapshot
        snapshot.keys[key] = entries
        offset += FRAME.size + length


def _read_key(body: bytes) -> tuple[str, Entries]:
    kind, key_length, count = _KEY_HEAD.unpack_from(body)
    start = _KEY_HEAD.size
    key = body[start : start + key_length].decode()
    offset = start + key_length
    if kind == KEY:
        if len(body) - offset != 16 * count:
            raise ValueError("entry count does not match the record length")
        flat = struct.unpack_from(f"<{2 * count}q", body, offset)
        return key, list(zip(flat[::2], flat[1::2], strict=True))
    if kind != KEY_WIDE:
        raise ValueError(f"unknown record type {kind}")
    entries = []
    for _ in range(count):
        time_us, size = struct.unpack_from("<qH", body, offset)
        offset += 10
        entries.append((time_us, int.from_bytes(body[offset : offset + size], "little", signed=True)))
        offset += size
    if offset != len(body):
        raise ValueError("entry count does not match the record length")
    return key, entries
