"""The write-ahead log of the memory storage: every accepted write, framed, in segment files.

A segment starts with a header (magic + format version). Each record after it is
framed as ``length (u32) | crc32 of the body (u32) | body``, so a torn or garbled
tail is found and cut off at the last whole record. A body is
``type (u8) | flags (u8) | time_us (i64) | payload``: records carry the time they
were recorded at, so a replay puts every value back in its own slot.

Extensible without a format break: flag bit ``n`` set means one more optional field
follows the payload, ``length (u32) | bytes``, in bit order; a reader skips the ones
it does not know. Bit 0 is the idempotency marker of a SINGLE or BATCH write
(``Idempotency-Key``): inside the record of the write it guards, so a replay
restores both or neither. A change a reader must understand bumps FORMAT_VERSION,
and an older reader refuses such a file by name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from zlib import crc32

from .base import FsyncMode, Marker, StorageUnavailable, UnsupportedDataFormat

log = logging.getLogger(__name__)

MAGIC = b"RINGSUMJ"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sH")  # magic, format version
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
EVERY_SECOND_S = 1.0


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


def check_header(path: Path, data: bytes, magic: bytes) -> str | None:
    """None when ``data`` starts with a header we read; else why not. Raises
    UnsupportedDataFormat for a newer format version, which must not be guessed at."""
    if len(data) < HEADER.size:
        return "the file header is cut short"
    found, version = HEADER.unpack_from(data)
    if found != magic:
        return "it does not start with a ringsum header"
    if version > FORMAT_VERSION:
        raise UnsupportedDataFormat(path, version, FORMAT_VERSION)
    if version < 1:
        return f"format version {version} is not one"
    return None


@dataclass
class Segment:
    """What a segment file holds: its whole records, and where and why reading stopped early."""

    records: list[Record]
    good_size: int  # bytes up to the end of the last whole record
    damage: str | None = None


def read_segment(path: Path) -> Segment:
    """Every whole record of ``path``, up to the first torn or garbled one."""
    data = path.read_bytes()
    problem = check_header(path, data, MAGIC)
    if problem is not None:
        return Segment([], 0, problem if data else None)
    records, offset = [], HEADER.size
    while offset < len(data):
        if len(data) - offset < FRAME.size:
            return Segment(records, offset, f"a record is cut short at byte {offset}")
        length, checksum = FRAME.unpack_from(data, offset)
        body = data[offset + FRAME.size : offset + FRAME.size + length]
        if length > MAX_BODY or len(body) < length:
            return Segment(records, offset, f"a record is cut short at byte {offset}")
        if crc32(body) != checksum:
            return Segment(records, offset, f"the record at byte {offset} fails its checksum")
        try:
            records.append(_decode(body))
        except (ValueError, struct.error) as error:
            return Segment(records, offset, f"the record at byte {offset} is not readable ({error})")
        offset += FRAME.size + length
    return Segment(records, offset)


# -- writing -------------------------------------------------------------------------


def fsync_directory(path: Path) -> None:
    """Make a create, rename or unlink in ``path`` itself durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_segment(path: Path, *, sync_directory: bool = True) -> int:
    """A new segment file holding just its header; its fd, open for appending."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
    try:
        os.write(fd, HEADER.pack(MAGIC, FORMAT_VERSION))
        if sync_directory:
            fsync_directory(path.parent)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return fd


class Journal:
    """Appends framed records to the open segment, fsyncing as ``mode`` says.

    The caller (the storage, under its lock) appends and rotates, so log order is
    apply order. Every append reaches the operating system (``write()``) before it
    returns: a killed process loses nothing acknowledged. Closed segments are fsynced
    and closed off the caller's lock by ``seal_closed()``.
    """

    def __init__(self, directory: Path, sequence: int, mode: FsyncMode, name_of: Callable[[int], Path]) -> None:
        self._directory = directory
        self._name_of = name_of  # sequence -> segment path
        self._mode = mode
        self.sequence = sequence
        self._fd = create_segment(name_of(sequence))
        self._size = HEADER.size
        self._records = 0  # appended to the open segment
        self._torn = False  # a failed append left bytes we could not cut off yet
        self._unsynced = False
        self._closed_fds: list[int] = []
        self._sync_lock = threading.Lock()  # no fd is closed while a fsync of it runs
        self._stopping = threading.Event()
        self._syncer: threading.Thread | None = None
        if mode is FsyncMode.EVERYSEC:
            self._syncer = threading.Thread(target=self._sync_every_second, name="ringsum-fsync", daemon=True)
            self._syncer.start()

    @property
    def has_records(self) -> bool:
        return self._records > 0

    def append(self, frame: bytes) -> None:
        """Write ``frame`` whole, or raise StorageUnavailable having written nothing."""
        try:
            if self._torn:
                self._cut_back()
            written = os.write(self._fd, frame)
            while written < len(frame):
                written += os.write(self._fd, memoryview(frame)[written:])
            if self._mode is FsyncMode.ALWAYS:
                os.fsync(self._fd)
        except OSError as error:
            self._torn = True
            with contextlib.suppress(OSError):  # else tried again before the next append
                self._cut_back()
            raise StorageUnavailable(
                f"cannot write to the data dir {self._directory}: {error.strerror or error}; nothing was recorded"
            ) from error
        self._size += len(frame)
        self._records += 1
        self._unsynced = True

    def _cut_back(self) -> None:
        """Drop a partly written record, so nothing is ever appended after garbage."""
        os.ftruncate(self._fd, self._size)
        self._torn = False

    def rotate(self) -> int:
        """Start the next segment (cheap: a create and a header); return the sequence
        of the one closed. Call under the storage lock, then ``seal_closed()`` off it."""
        fd = create_segment(self._name_of(self.sequence + 1), sync_directory=False)  # seal_closed() does it
        if self._torn:
            os.ftruncate(self._fd, self._size)
        self._closed_fds.append(self._fd)
        self._fd, self._size, self._records, self._torn = fd, HEADER.size, 0, False
        self.sequence += 1
        self._unsynced = True
        return self.sequence - 1

    def seal_closed(self) -> None:
        """fsync and close the segments rotate() closed, and make the new one's name durable."""
        fsync_directory(self._directory)
        with self._sync_lock:
            while self._closed_fds:
                fd = self._closed_fds.pop()
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    def sync(self) -> None:
        with self._sync_lock:
            self._unsynced = False
            os.fsync(self._fd)

    def _sync_every_second(self) -> None:
        while not self._stopping.wait(EVERY_SECOND_S):
            if self._unsynced:
                try:
                    self.sync()
                except OSError as error:  # logged; the next second tries again
                    self._unsynced = True
                    log.error("fsync of the log in %s failed: %s", self._directory, error)

    def close(self) -> None:
        """Stop the fsync thread; fsync and close every segment (quick: the log holds
        everything already, nothing else is written on the way out)."""
        self._stopping.set()
        if self._syncer is not None:
            self._syncer.join()
        self.seal_closed()
        with self._sync_lock:
            if self._torn:
                os.ftruncate(self._fd, self._size)
            os.fsync(self._fd)
            os.close(self._fd)
