"""How the supervisor tells a worker that still serves from one that only still exists.

Each worker slot has one 8-byte cell in a shared anonymous ``mmap`` the supervisor
creates before it forks anything: the ``time.monotonic_ns()`` of that worker's last
heartbeat, 0 while the worker is still starting. The worker writes it from a task on
its event loop, so a loop that is blocked (a request running inline for too long, a
deadlock) or a process that is stopped (SIGSTOP, a debugger) goes silent, while a
process merely busy in other threads does not hide a stuck loop.

Why a shared mapping rather than gunicorn's ``WorkerTmp`` (an unlinked temporary file
whose ctime each beat changes with ``fchmod``): a beat is a store to memory and a check
a load, with no system call, no file descriptor per worker and no file in ``/tmp``
(gunicorn's own docs warn that a disk-backed ``/tmp`` can stall its heartbeats). The
monotonic clock is the same for every process on the machine, so the supervisor reads
the worker's timestamp against its own clock directly. A cell is written whole by one
process only (its worker), and the supervisor reads it twice before acting, so a read
that happened to see half a write never kills anyone.
"""

from __future__ import annotations

import mmap
import struct
import time

_CELL = struct.Struct("=q")  # nanoseconds of time.monotonic_ns(); 0 = not beaten yet


class Heartbeats:
    """One heartbeat cell per worker slot, shared by the supervisor and its forks."""

    def __init__(self, slots: int) -> None:
        # fileno -1: anonymous, MAP_SHARED (the default) so that forks write the same pages.
        self._cells = mmap.mmap(-1, max(1, slots) * _CELL.size)

    def beat(self, slot: int) -> None:
        """Say "my loop is turning" (the worker, from a task on its loop)."""
        _CELL.pack_into(self._cells, slot * _CELL.size, time.monotonic_ns())

    def starting(self, slot: int) -> None:
        """Mark the slot as starting (the supervisor, before it forks its worker)."""
        _CELL.pack_into(self._cells, slot * _CELL.size, 0)

    def silent_for(self, slot: int) -> float | None:
        """Seconds since the slot's last beat; None while its worker has not beaten yet."""
        first, again = (_CELL.unpack_from(self._cells, slot * _CELL.size)[0] for _ in range(2))
        if not first or not again:
            return None
        return (time.monotonic_ns() - max(first, again)) / 1e9
