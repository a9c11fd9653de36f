"""Appending to the log, and forcing it to the disk as ``RINGSUM_FSYNC`` says.

Every append reaches the operating system (``write()``) before it returns, so a killed
process loses nothing acknowledged. When the disk must have it too:

- ``always``: group commit. Appends only write; the answer of each write waits for a
  :class:`Commit` (the log position after its record), outside the storage's lock. One
  fsync covers whatever was written when it starts: the edge runs it once per turn of
  its loop for every answer of that turn, and threads waiting together share one;
- ``everysec``: the same thread fsyncs once a second, off every request's path.

A failed fsync is never retried as if the data were safe: after it, Linux may have
dropped the dirty pages it could not write (PostgreSQL, LevelDB and Redis learnt this
the hard way). The journal then *fails*: every append and every answer waiting on it is
refused with NotDurable, and it is never used again. Durability comes back only from a
new journal, after the storage wrote what it holds in memory to a fresh snapshot
(see persistence.py). A ``write()`` that fails (disk full) is different: nothing of it
is kept (a partial record is cut off), the write is refused, the records before it are
not in doubt, and the next append simply tries again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from . import file_header
from .base import FsyncMode, NotDurable, StorageUnavailable
from .journal import create_segment, fsync_directory

log = logging.getLogger(__name__)

EVERY_SECOND_S = 1.0
PROBE = b"\0" * 4096  # what probe() writes and cuts off again: about a batch's record
_sync_data = getattr(os, "fdatasync", os.fsync)  # an append's data and size; not its times


class Commit:
    """A position in the log: done once every record up to it is on the disk."""

    __slots__ = ("journal", "position")

    def __init__(self, journal: Journal, position: int) -> None:
        self.journal = journal
        self.position = position

    def wait(self) -> None:
        self.journal.wait_synced(self.position)


class Journal:
    """The open log segment of one run: appends, rotation, fsyncs, failure.

    The caller (the storage, under its lock) appends and rotates, so log order is apply
    order. Closed segments are fsynced and closed off that lock by ``seal_closed()``.
    ``on_failure`` is told (once, from the thread that saw it) why the journal failed.
    """

    def __init__(
        self,
        directory: Path,
        sequence: int,
        mode: FsyncMode,
        name_of: Callable[[int], Path],
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._directory = directory
        self._name_of = name_of  # sequence -> segment path
        self._mode = mode
        self._on_failure = on_failure
        self.sequence = sequence
        self._fd = create_segment(name_of(sequence), sequence)
        self._size = file_header.SIZE
        self._records = 0  # appended to the open segment
        self._torn = False  # a failed append left bytes we could not cut off yet
        self._closed_fds: list[int] = []  # rotated out, not yet fsynced and closed
        self._next_fd: int | None = None  # the next segment, made by prepare_next()
        self.failure: str | None = None  # why it failed: nothing more is appended
        self._written = 0  # log positions: records appended since the journal opened ...
        self._synced = 0  # ... and fsynced
        self._syncing = False  # a caller of wait_synced() runs an fsync for everyone
        self._state = threading.Condition()  # guards the positions
        self._sync_lock = threading.Lock()  # no fd is closed while an fsync of it runs
        self._stopping = False
        self._syncer: threading.Thread | None = None
        if mode is FsyncMode.EVERYSEC:
            self._syncer = threading.Thread(target=self._sync_every_second, name="ringsum-fsync", daemon=True)
            self._syncer.start()

    @property
    def closed(self) -> bool:
        return self._stopping

    @property
    def has_records(self) -> bool:
        return self._records > 0

    @property
    def segment(self) -> Path:
        return self._name_of(self.sequence)

    def segment_unlinked(self) -> bool:
        """Whether the open segment's file was deleted (written to, it keeps nothing).
        Under the fsync lock: no fd it may read is closed meanwhile."""
        with self._sync_lock:
            if self._stopping:
                return False
            return os.fstat(self._fd).st_nlink == 0

    # -- appending (under the storage's lock) ----------------------------------------

    def append(self, frame: bytes) -> Commit | None:
        """Write ``frame`` whole, or raise StorageUnavailable having written nothing. With
        ``always``, the Commit the write's answer must wait for."""
        if self.failure is not None:
            raise self._refusal()
        try:
            if self._torn:
                self._cut_back()
            written = os.write(self._fd, frame)
            while written < len(frame):
                written += os.write(self._fd, memoryview(frame)[written:])
        except OSError as error:
            self._torn = True
            with contextlib.suppress(OSError):  # else tried again before the next append
                self._cut_back()
            raise StorageUnavailable(
                f"cannot write to the data dir {self._directory}: {error.strerror or error}; nothing was recorded"
            ) from error
        self._size += len(frame)
        self._records += 1
        self._written += 1
        return Commit(self, self._written) if self._mode is FsyncMode.ALWAYS else None

    def last_commit(self) -> Commit | None:
        """What an answer given again (an idempotent retry) waits for with ``always``:
        everything written so far, its first answer's record included."""
        if self.failure is not None:
            raise self._refusal()
        return Commit(self, self._written) if self._mode is FsyncMode.ALWAYS else None

    def probe(self) -> None:
        """Write a record's worth of bytes and cut them off again: whether an append
        would be taken now (after one failed). Raises OSError when not."""
        if self._torn:
            self._cut_back()
        try:
            os.write(self._fd, PROBE)
        finally:
            self._torn = True
            self._cut_back()

    def _cut_back(self) -> None:
        """Drop a partly written record, so nothing is ever appended after garbage."""
        os.ftruncate(self._fd, self._size)
        self._torn = False

    def prepare_next(self) -> None:
        """Make the next segment (its header and name on the disk), off the storage's
        lock, so that rotate() only switches to it. Only the checkpointer rotates."""
        if self._next_fd is None:
            self._next_fd = create_segment(self._name_of(self.sequence + 1), self.sequence + 1)

    def rotate(self) -> int:
        """Switch to the next segment (prepared by prepare_next(), else made here); return
        the sequence of the one closed. Call under the storage lock, then
        ``seal_closed()`` off it."""
        if self.failure is not None:
            raise self._refusal()
        self.prepare_next()
        fd, self._next_fd = self._next_fd, None
        assert fd is not None  # prepare_next() made it
        if self._torn:
            os.ftruncate(self._fd, self._size)
        self._closed_fds.append(self._fd)  # before the swap: a concurrent fsync sees it in one place or the other
        self._fd, self._size, self._records, self._torn = fd, file_header.SIZE, 0, False
        self.sequence += 1
        return self.sequence - 1

    def seal_closed(self) -> None:
        """fsync and close the segments rotate() closed. A failure fails the journal,
        and is raised as NotDurable."""
        try:
            with self._sync_lock:
                while self._closed_fds:
                    fd = self._closed_fds[0]
                    try:
                        _sync_data(fd)
                    finally:
                        self._closed_fds.pop(0)
                        os.close(fd)
        except OSError as error:
            self.fail(f"fsync of the log in {self._directory} failed: {error.strerror or error}")
            raise self._refusal() from error

    # -- fsyncing ------------------------------------------------------------------------

    def wait_synced(self, position: int) -> None:
        """Return once the log is on the disk up to ``position``; NotDurable when it
        cannot be. The first caller to find no fsync running runs one itself, for
        everything written so far; callers arriving meanwhile wait for it, then for the
        next one if they need it: concurrent writers share fsyncs (group commit)."""
        with self._state:
            while self._synced < position:
                if self.failure is not None:
                    raise self._in_doubt()
                if not self._syncing:
                    break
                self._state.wait()
            else:
                return
            self._syncing = True
            target = self._written  # the writes that came meanwhile ride along
        try:
            synced = self._sync(target)
        finally:
            with self._state:
                self._syncing = False
                self._state.notify_all()
        if not synced:
            raise self._in_doubt()

    def _sync_every_second(self) -> None:
        while True:
            with self._state:
                self._state.wait_for(lambda: self._stopping, EVERY_SECOND_S)
                if self._stopping or self.failure is not None:
                    return
                target = self._written
            if target > self._synced:
                self._sync(target)

    def _sync(self, target: int) -> bool:
        """fsync every fd that may hold records up to ``target``; tell who waited."""
        failure = None
        try:
            with self._sync_lock:
                current = self._fd  # read before the closed ones: rotate() lists an fd before replacing it
                for fd in [*self._closed_fds, current]:
                    _sync_data(fd)
                if self._mode is FsyncMode.ALWAYS and os.fstat(current).st_nlink == 0:
                    failure = f"the log segment {self.segment} was deleted"
        except OSError as error:
            failure = f"fsync of the log in {self._directory} failed: {error.strerror or error}"
        if failure is not None:
            self.fail(failure)
            return False
        with self._state:
            self._synced = max(self._synced, target)
            self._state.notify_all()
        return True

    # -- failing and closing -----------------------------------------------------------

    def fail(self, reason: str, *, tell: bool = True) -> None:
        """Never append again: refuse every write and every answer still waiting. The
        first reason is kept and told to ``on_failure`` (unless ``tell`` is False)."""
        with self._state:
            if self.failure is not None:
                return
            self.failure = reason
            self._state.notify_all()
        if tell and self._on_failure is not None:
            self._on_failure(reason)

    def _refusal(self) -> NotDurable:
        return NotDurable(
            f"the data dir {self._directory} cannot be trusted with a write right now ({self.failure}); "
            "nothing was recorded"
        )

    def _in_doubt(self) -> NotDurable:
        return NotDurable(
            f"the data dir {self._directory} could not make this write durable ({self.failure}); "
            "it is held in memory but was not acknowledged: retry it with the same Idempotency-Key "
            "to have it count exactly once"
        )

    def close(self, *, sync: bool = True) -> None:
        """Stop the fsync thread; fsync (unless failed, or ``sync`` is False) and close
        every segment. Quick: the log holds everything already. Answers still waiting
        are told the outcome of that last fsync. Closing twice does nothing."""
        with self._state:
            if self._stopping:
                return
            self._stopping = True
            self._state.notify_all()
        if self._syncer is not None and self._syncer is not threading.current_thread():
            self._syncer.join()
        if self.failure is None and sync:
            with contextlib.suppress(OSError), self._sync_lock:
                if self._torn:
                    os.ftruncate(self._fd, self._size)
            if self._sync(self._written):
                with contextlib.suppress(OSError):
                    fsync_directory(self._directory)
        self.fail("the storage is closing", tell=False)  # wakes what still waits; a no-op after a failure
        with self._sync_lock:
            for fd in [*self._closed_fds, self._fd, *([] if self._next_fd is None else [self._next_fd])]:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._closed_fds.clear()
