"""A child process that must not outlive the process that started it: a serving worker
(its supervisor) and the checkpoint's fold (its server). One helper for both."""

from __future__ import annotations

import contextlib
import ctypes
import os

_PR_SET_PDEATHSIG = 1  # prctl(2)


def die_with_parent(parent_pid: int, signum: int) -> bool:
    """Have Linux send ``signum`` to this process when its parent dies, and tell whether
    ``parent_pid`` is still its parent: if not, the parent died before the request took
    effect and no signal will come. (Other systems: only the answer; the caller's own
    watch of ``os.getppid()`` has to do the rest.)"""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
    return os.getppid() == parent_pid
