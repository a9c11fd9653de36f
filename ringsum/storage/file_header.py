"""The header every data dir file starts with, in each format version this ringsum reads.

Format 2 (written): ``magic (8) | version (u16) | number (u64) | crc32 (u32)`` of the
18 bytes before it. ``number`` is what the file says about its place in the data dir:
a log segment's own sequence, the last segment a snapshot has folded in ("covers").
Every header field is checksummed: a flipped byte in ``covers`` once made a restart
skip acknowledged writes, or replay a folded segment and count its writes twice, with
no line said. Now it is seen, never guessed at.

Format 1 (read): ``magic | version``, then, in a snapshot only, ``covers (u64)`` with no
checksum. A file with a version newer than FORMAT_VERSION is refused by name
(UnsupportedDataFormat): it was written by a newer ringsum and must not be misread.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from zlib import crc32

from .base import UnsupportedDataFormat

FORMAT_VERSION = 2
START = struct.Struct("<8sH")  # magic, format version: how every version begins
_NUMBER = struct.Struct("<Q")
_CHECKSUM = struct.Struct("<I")
SIZE = START.size + _NUMBER.size + _CHECKSUM.size  # a format-2 header


@dataclass(frozen=True)
class Header:
    """What a file's header says. ``size``: where its records start (0: nowhere that
    can be trusted); ``number``: None when the header does not say, or says it damaged."""

    version: int
    number: int | None
    size: int
    damage: str | None = None


def pack(magic: bytes, number: int) -> bytes:
    """A format-2 header."""
    head = START.pack(magic, FORMAT_VERSION) + _NUMBER.pack(number)
    return head + _CHECKSUM.pack(crc32(head))


def read(path: Path, data: bytes, magic: bytes, *, number_in_v1: bool) -> Header:
    """The header ``data`` starts with. ``number_in_v1``: format 1 has the number after
    the version (a snapshot's covers), unchecked. Raises UnsupportedDataFormat for a
    newer format version. A format-2 header failing its checksum says where records
    would start (they carry their own checksums) but not its number."""
    if len(data) < START.size:
        return Header(0, None, 0, "the file header is cut short")
    found, version = START.unpack_from(data)
    if found != magic:
        return Header(0, None, 0, "it does not start with a ringsum header")
    if version > FORMAT_VERSION:
        raise UnsupportedDataFormat(path, version, FORMAT_VERSION)
    if version < 1:
        return Header(version, None, 0, f"format version {version} is not one")
    if version == 1:
        if not number_in_v1:
            return Header(1, None, START.size)
        if len(data) < START.size + _NUMBER.size:
            return Header(1, None, 0, "the file header is cut short")
        return Header(1, _NUMBER.unpack_from(data, START.size)[0], START.size + _NUMBER.size)
    if len(data) < SIZE:
        return Header(version, None, 0, "the file header is cut short")
    (checksum,) = _CHECKSUM.unpack_from(data, SIZE - _CHECKSUM.size)
    if crc32(data[: SIZE - _CHECKSUM.size]) != checksum:
        return Header(version, None, SIZE, "its header fails its checksum")
    return Header(version, _NUMBER.unpack_from(data, START.size)[0], SIZE)
