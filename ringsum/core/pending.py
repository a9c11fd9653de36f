"""Answers that wait for the disk: group commit, seen from the side that answers.

With ``RINGSUM_FSYNC=always`` a write's answer may leave only once its log record is
fsynced. An fsync per request would make every request wait for every other one's disk
flush; instead the storage hands back a :class:`Pending` (the point in the log the
answer needs) and the edge, which called the app, holds the answer: once every request
that arrived in one turn of its loop has run, one fsync covers all of their records,
then their answers leave together (Redis does the same before it sleeps).

Whoever called the app without asking for this (the Flask test client, another WSGI
server) gets the safe default: :func:`hold_answer` waits right there, on the request's
thread (still outside the storage's lock, and concurrent threads share one fsync).
"""

from __future__ import annotations

import threading
from typing import Protocol


class Pending(Protocol):
    """A point in the log an answer needs on the disk."""

    def wait(self) -> None:
        """Return once it is on the disk (running the fsync if no one else is); raise
        NotDurable when it cannot be."""


_held = threading.local()


def collect() -> None:
    """The caller of the app (the edge) will hold this thread's next answer itself."""
    _held.pending = []


def collected() -> Pending | None:
    """What the answer just made must wait for (None: nothing), ending the collection.
    The last one is enough: log order is write order, so it covers the ones before."""
    pending = getattr(_held, "pending", None)
    _held.pending = None
    return pending[-1] if pending else None


def hold_answer(pending: Pending) -> None:
    """Called by the storage after a write: the answer must wait for ``pending``. Left to
    the edge when it collects; else waited for here (raises NotDurable on failure)."""
    collecting = getattr(_held, "pending", None)
    if collecting is None:
        pending.wait()
    else:
        collecting.append(pending)
