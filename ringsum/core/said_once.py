"""Log lines about the server, said by one of its workers rather than by each.

What a worker finds at start (how durable the Redis behind it is, a key layout it
refuses, an export that leaves keys out) and some of what goes wrong (Redis
unreachable) is the same for every worker: with ``--workers N`` each said it, N copies
of one line. Code marks such a line ``extra=server_wide()`` (said once per run of the
server) or ``extra=server_wide(every_s=10)`` (at most once per 10 s, over all the
workers); the first worker to say it says it, the others drop it. A line is known by
its logger and its format string.

The supervisor makes the record before it forks: an unlinked temporary file every
worker inherits, holding when each line was last said (``time.monotonic()``, one clock
for the whole machine). A worker reads and writes it under a POSIX record lock, which
belongs to the process (a ``flock`` on an inherited descriptor would be shared by all
of them). The lines are few (at start, and every few seconds at most), so a small JSON
document will do. Served without ringsum's supervisor (``flask run``, tests), nothing
is filtered: every line is said, as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Iterator

_ATTRIBUTE = "ringsum_server_wide_every_s"


def server_wide(every_s: float = math.inf) -> dict[str, float]:
    """The ``extra=`` of a line about the server: said once per run (or per ``every_s``)
    by whichever worker says it first."""
    return {_ATTRIBUTE: every_s}


class SaidOnce(logging.Filter):
    """The record of server-wide lines said, shared by the supervisor's workers."""

    def __init__(self) -> None:
        super().__init__()
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self._threads = threading.Lock()  # --threads N: the record lock is per process, not per thread

    def install(self) -> None:
        """Filter the server-wide lines of this process (a worker) from now on."""
        for handler in logging.getLogger().handlers:
            handler.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        every_s = getattr(record, _ATTRIBUTE, None)
        if every_s is None:
            return True
        key = f"{record.name}:{record.msg}"
        now = time.monotonic()
        with self._locked():
            said = self._read()
            if key in said and now - said[key] < every_s:
                return False
            said[key] = now
            self._write(said)
        return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = self._file.fileno()
        with self._threads:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN)

    def _read(self) -> dict[str, float]:
        fd = self._file.fileno()
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        try:
            return json.loads(data) if data else {}
        except ValueError:  # never written whole: start over rather than lose lines
            return {}

    def _write(self, said: dict[str, float]) -> None:
        fd = self._file.fileno()
        data = json.dumps(said).encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
