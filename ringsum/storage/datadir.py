"""The data dir: its layout, and its lock, so exactly one process owns it.

The owner flock()s the directory itself, so no file operation inside it can take the
ownership away (deleting ``LOCK`` used to let a second server in), and it remembers which
directory it locked, so a data dir deleted or replaced while serving is noticed.

LOCK                      flock()ed too, for ringsum 0.2 (which locks only this file)
snapshot                  the window as of the last checkpoint (snapshot.py)
journal-0000000042.log    segments of the write-ahead log (journal.py), oldest first
*.tmp                     a snapshot being written; removed at start if a crash left one
*.damaged                 a damaged file as found at a start, kept for a human (never deleted)
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import time
from pathlib import Path

from .base import DataDirError, DataDirInUse
from .journal import fsync_directory
from .snapshot import TEMPORARY_SUFFIX

LOCK_NAME = "LOCK"
SNAPSHOT_NAME = "snapshot"
_SEGMENT_PREFIX, _SEGMENT_SUFFIX = "journal-", ".log"
DAMAGED_SUFFIX = ".damaged"
_LOCK_POLL_S = 0.05


class DataDir:
    """An open, locked data dir. ``lock_timeout_s`` > 0 waits that long for a previous
    owner to let go (a reload hands over this way) before raising DataDirInUse.

    In a process forked by one that called ``hand_down()`` on the same directory (the
    server's workers), the lock is shared with that one: the supervisor takes the data
    dir before it binds the port or says "serving", and keeps it while workers come and
    go, so no other server can slip in between two of them.
    """

    def __init__(self, path: str | os.PathLike[str], lock_timeout_s: float = 0.0) -> None:
        self.path = Path(path).absolute()
        self._dir_fd = self._lock_fd = -1
        if self._share_handed_down():
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            self._lock_fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644, dir_fd=self._dir_fd)
        except OSError as error:
            self.release()
            raise DataDirError(f"cannot use the data dir {self.path}: {error.strerror or error}") from error
        try:
            self._take_lock(lock_timeout_s)
        except BaseException:
            self.release()
            raise
        self.identity = _identity(os.fstat(self._dir_fd))

    def hand_down(self) -> None:
        """Let the processes this one forks share this lock (see the class docstring)."""
        _handed_down[self.path] = (os.getpid(), self)

    def _share_handed_down(self) -> bool:
        """In a process forked by the holder: the holder's lock, on the same directory."""
        holder = _handed_down.get(self.path)
        if holder is None or holder[0] == os.getpid() or holder[1].gone() is not None:
            return False
        self._dir_fd, self._lock_fd = os.dup(holder[1]._dir_fd), os.dup(holder[1]._lock_fd)
        self.identity = holder[1].identity  # dup()ed descriptors share the open file, and its flock
        return True

    def _take_lock(self, timeout_s: float) -> None:
        """The directory first (what counts), then LOCK (what ringsum 0.2 looks at)."""
        deadline = time.monotonic() + timeout_s
        for fd in (self._dir_fd, self._lock_fd):
            while not self._try_lock(fd):
                if time.monotonic() >= deadline:
                    raise DataDirInUse(self.path)
                time.sleep(_LOCK_POLL_S)

    def _try_lock(self, fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DataDirError(f"cannot lock the data dir {self.path}: {error.strerror}") from error
            return False

    def gone(self) -> str | None:
        """Why the path no longer leads to the directory we hold (None: it does)."""
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            return f"the data dir {self.path} was deleted"
        except OSError as error:
            return f"the data dir {self.path} cannot be reached ({error.strerror or error})"
        if _identity(found) != self.identity:
            return f"the data dir {self.path} was replaced by another directory or file"
        return None

    @property
    def snapshot(self) -> Path:
        return self.path / SNAPSHOT_NAME

    def segment(self, sequence: int) -> Path:
        return self.path / f"{_SEGMENT_PREFIX}{sequence:010d}{_SEGMENT_SUFFIX}"

    def segments(self) -> list[tuple[int, Path]]:
        """The log segments, oldest first."""
        found = []
        for path in self.path.glob(f"{_SEGMENT_PREFIX}*{_SEGMENT_SUFFIX}"):
            number = path.name[len(_SEGMENT_PREFIX) : -len(_SEGMENT_SUFFIX)]
            if number.isdigit():
                found.append((int(number), path))
        return sorted(found)

    def remove_temporary_files(self) -> list[str]:
        """Delete what a crash mid-checkpoint left behind; return their names."""
        removed = []
        for path in self.path.glob(f"*{TEMPORARY_SUFFIX}"):
            path.unlink(missing_ok=True)
            removed.append(path.name)
        return removed

    def keep_damaged(self, path: Path, *, copy: bool) -> Path:
        """Keep a damaged file as ``<name>.damaged`` (``<name>.2.damaged``... when that
        name is taken: none is ever overwritten or deleted), for a human to look at.
        ``copy``: the file stays in place too (a log segment, cut back afterwards); else
        it is moved. The copy is whole and fsynced before the caller cuts the original."""
        aside = path.with_name(path.name + DAMAGED_SUFFIX)
        number = 1
        while aside.exists():
            number += 1
            aside = path.with_name(f"{path.name}.{number}{DAMAGED_SUFFIX}")
        if copy:
            temporary = aside.with_name(aside.name + TEMPORARY_SUFFIX)
            shutil.copyfile(path, temporary)
            with temporary.open("rb+") as file:
                os.fsync(file.fileno())
            os.replace(temporary, aside)
        else:
            os.replace(path, aside)
        fsync_directory(self.path)
        return aside

    def damaged_files(self) -> int:
        """How many damaged files are kept here (for /metrics: until a human removes them)."""
        return sum(1 for _ in self.path.glob(f"*{DAMAGED_SUFFIX}"))

    def release(self) -> None:
        """Let go of the lock (the process exiting does it too, even on kill -9)."""
        for fd in (self._lock_fd, self._dir_fd):
            if fd >= 0:
                os.close(fd)
        self._dir_fd = self._lock_fd = -1


_handed_down: dict[Path, tuple[int, DataDir]] = {}  # path -> (pid of the holder, its DataDir)


def _identity(found: os.stat_result) -> tuple[int, int]:
    return found.st_dev, found.st_ino
