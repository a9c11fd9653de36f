"""``process_*`` on /metrics: the CPU, memory and file descriptors of the whole server.

prometheus_client's own ``ProcessCollector`` describes the one process it runs in. A
ringsum server is a supervisor and its workers (one worker is still two processes), and
any worker may answer a scrape: that collector would show whichever worker answered,
figures jumping from scrape to scrape and a CPU counter that goes back when a worker
is replaced. So the worker that answers reads every process of its server, the way
prom-client aggregates a Node.js cluster (sums), under the same six names:

- ``process_cpu_seconds_total``: user + system time of the supervisor, of each live
  worker, and of every worker already reaped (the supervisor's ``cutime``/``cstime``:
  the kernel adds a child's time to its parent's as it is waited for), so it never goes
  back when a worker dies or a SIGHUP replaces it. With ``--workers N`` the supervisor
  reaps under the metrics directory's lock and a scrape reads under it, so no scrape
  sees a worker both live and reaped, or neither.
- ``process_resident_memory_bytes``, ``process_virtual_memory_bytes``,
  ``process_open_fds``, ``process_max_fds``: summed over the live processes, so
  ``open / max`` is the share of the descriptors the server may hold that it holds.
- ``process_start_time_seconds``: the supervisor's, when the server started; a
  replaced worker does not change it.

Only ``/proc/<pid>/`` files are read, so it works under systemd's ``ProcSubset=pid``
(deploy/ringsum.service), which hides ``/proc/stat``: the boot time that turns a start
time into a date is read from there when it can be, else from ``CLOCK_BOOTTIME``, once,
in the supervisor before it forks (every worker then reports the same start time).

Served without ringsum's supervisor (``flask run``, ``gunicorn app:app``) the figures
are those of the one process, like prometheus_client's collector; under gunicorn's
multiprocess mode they would be one worker's of many, so none is shown (as
prometheus_client's docs say of its own).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import resource
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PROC = "/proc"
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = resource.getpagesize()
_PID = struct.Struct("=q")


def _boot_time(proc: str) -> float:
    """Seconds since the epoch when the machine booted: /proc/stat's ``btime`` (a whole
    second, as prometheus_client reads it), or the clock when /proc/stat is hidden."""
    with contextlib.suppress(OSError), open(os.path.join(proc, "stat"), "rb") as stat:
        for line in stat:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    return round(time.time() - time.clock_gettime(time.CLOCK_BOOTTIME), 3)


BOOT_TIME = _boot_time(PROC)  # at import: in the supervisor, before any worker is forked


class Roster:
    """The pid of each worker slot, in a shared anonymous mapping the supervisor creates
    before it forks: how the worker that answers a scrape finds its siblings (Linux
    without ``CONFIG_PROC_CHILDREN`` has no list of a process's children)."""

    def __init__(self, slots: int) -> None:
        self._slots = max(1, slots)
        self._cells = mmap.mmap(-1, self._slots * _PID.size)

    def started(self, slot: int, pid: int) -> None:
        _PID.pack_into(self._cells, slot * _PID.size, pid)

    def ended(self, slot: int, pid: int) -> None:
        """Clear the slot, if it still names ``pid`` (the supervisor, as it reaps)."""
        if _PID.unpack_from(self._cells, slot * _PID.size)[0] == pid:
            _PID.pack_into(self._cells, slot * _PID.size, 0)

    def pids(self) -> list[int]:
        cells = (_PID.unpack_from(self._cells, slot * _PID.size)[0] for slot in range(self._slots))
        return [pid for pid in cells if pid > 0]


@dataclass
class Usage:
    cpu_ticks: int = 0  # summed in clock ticks, divided once: no float dust
    resident_bytes: float = 0.0
    virtual_bytes: float = 0.0
    open_fds: float = 0.0
    max_fds: float = 0.0
    start_ticks: float | None = None  # of the first process read (the supervisor)

    def add(self, proc: str, pid: int | str) -> bool:
        """Add one process; False when it is gone (or cannot be read)."""
        base = os.path.join(proc, str(pid))
        try:
            with open(os.path.join(base, "stat"), "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()  # after the name, which may hold spaces
            with open(os.path.join(base, "limits"), "rb") as limits:
                max_fds = next(float(line.split()[3]) for line in limits if line.startswith(b"Max open files"))
            open_fds = len(os.listdir(os.path.join(base, "fd")))
        except (OSError, StopIteration, ValueError, IndexError):
            return False
        # Fields from the state (3rd): utime 14, stime 15, cutime 16, cstime 17,
        # starttime 22, vsize 23, rss 24 (man 5 proc).
        self.cpu_ticks += sum(int(fields[index]) for index in (11, 12, 13, 14))
        self.virtual_bytes += float(fields[20])
        self.resident_bytes += float(fields[21]) * _PAGE
        self.open_fds += open_fds
        self.max_fds += max_fds
        if self.start_ticks is None:
            self.start_ticks = float(fields[19])
        return True


@dataclass
class Server:
    """The processes of a server ringsum's supervisor runs."""

    supervisor: int
    roster: Roster
    consistent: Callable[[], AbstractContextManager[object]]  # held while reading: see the module doc


class ProcessCollector(Collector):
    """The six ``process_*`` families, of the whole server once ``server`` is set."""

    def __init__(self, *, shared: bool, proc: str = PROC, boot_time: float = BOOT_TIME) -> None:
        self.server: Server | None = None
        self._shared = shared
        self._proc = proc
        self._boot_time = boot_time

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        usage = self._read()
        if usage is None:
            return
        yield CounterMetricFamily(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            value=usage.cpu_ticks / _TICKS,
        )
        yield GaugeMetricFamily(
            "process_resident_memory_bytes", "Resident memory size in bytes.", value=usage.resident_bytes
        )
        yield GaugeMetricFamily(
            "process_virtual_memory_bytes", "Virtual memory size in bytes.", value=usage.virtual_bytes
        )
        yield GaugeMetricFamily(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            value=self._boot_time + (usage.start_ticks or 0.0) / _TICKS,
        )
        yield GaugeMetricFamily("process_open_fds", "Number of open file descriptors.", value=usage.open_fds)
        yield GaugeMetricFamily("process_max_fds", "Maximum number of open file descriptors.", value=usage.max_fds)

    def _read(self) -> Usage | None:
        usage = Usage()
        server = self.server
        if server is None:
            if self._shared:  # one worker of a multiprocess server we do not run: not the whole
                return None
            return usage if usage.add(self._proc, "self") else None
        with server.consistent():
            if not usage.add(self._proc, server.supervisor):
                return None  # the supervisor is gone: this worker is stopping
            for pid in server.roster.pids():
                usage.add(self._proc, pid)
        return usage
