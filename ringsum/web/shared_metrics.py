"""Counters and histograms summed over every worker of one server (docs/api.md#metrics:
``/metrics`` is whole whichever worker answers).

This is prometheus_client's multiprocess mode, run by ringsum's own supervisor. With
``--workers N`` (N > 1) the supervisor makes a directory for this run before it forks
anything, names it in ``PROMETHEUS_MULTIPROC_DIR`` (so every worker inherits it), and
removes it when it stops. A worker that finds the variable set makes its instruments
write their values to its own memory-mapped files there (``counter_<pid>.db``,
``histogram_<pid>.db``); a scrape, whichever worker answers, reads every file and adds
them up. What the storage holds is not summed: each scrape reads it from the storage,
which every worker shares.

The mode's constraints, and how ringsum meets them:

- It must be chosen before an instrument exists. prometheus_client decides when it is
  imported, and the supervisor has imported it long before it forks; so a worker turns
  it on itself (``choose_values``) before its app creates any instrument.
- The instruments' own registry must not be scraped (each value would count twice): a
  scrape reads the files through ``collector()`` in a registry of its own, beside the
  collectors that read the storage at scrape time, which work as before.
- A dead worker's files stay: its counts are part of every total since the start (so a
  counter never goes back when a worker is replaced). The supervisor folds them into one
  archive file per kind (``counter_archive.db``...) as it reaps the worker, so a crash
  loop or many reloads do not leave a file per dead worker for every scrape to read. A
  scrape holds a shared lock on the directory while it reads, the fold an exclusive
  one: no scrape sees a dead worker's counts both in its file and in the archive.
- Gauges need an aggregation over workers: ``ringsum_workers`` is ``livesum`` (each
  live worker adds 1; ``mark_process_dead`` drops a dead worker's file). Gauges with
  ``set_function``, Info and Enum do not work in this mode; ringsum uses none.
- Custom collectors are not shared: they run in the worker that answers.
  ``StorageCollector`` and the exported sums read the storage, which every worker
  shares, so they are whole whichever worker runs them; the process figures
  (``ringsum.web.process_metrics``) read every process of the server from /proc, under the
  same shared lock, since the supervisor reaps a worker under the exclusive one.

One worker (the default) does none of this: its instruments are plain in-process
values, which cost a third of a shared one's update (measured in benchmarks).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import multiprocess, values
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.registry import Collector

ENVIRON = "PROMETHEUS_MULTIPROC_DIR"
_LOCK = ".lock"  # not *.db: the collector reads only those
_FOLDED_KINDS = ("counter", "histogram")  # what a dead worker leaves that still counts
_ARCHIVE = "archive"


def directory() -> str | None:
    """The shared directory of this run, or None when this process serves alone."""
    return os.environ.get(ENVIRON) or None


# -- in a worker ---------------------------------------------------------------------

_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def _own_pid() -> int:
    """The process id, kept up to date by a fork hook: prometheus_client checks it on
    every update, and os.getpid() is a system call each time (a third of the update)."""
    return _pid


def choose_values() -> str | None:
    """Make the instruments this process creates from now on write to the shared
    directory when there is one, else keep them in process (prometheus_client chose
    when it was imported, maybe under a variable the supervisor has since dropped);
    the directory, or None."""
    shared = directory()
    if shared is None:
        values.ValueClass = values.MutexValue
    elif not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue(_own_pid)
    return shared


class SharedCollector(Collector):
    """Every worker's counters and histograms, summed; read under the directory's
    shared lock, so the supervisor's fold of a dead worker is never seen half done."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._reader = multiprocess.MultiProcessCollector(None, path)

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator:
        with _flocked(self._path, fcntl.LOCK_SH):
            found = list(self._reader.collect())
        yield from found


def consistent_read() -> contextlib.AbstractContextManager[object]:
    """Held while a scrape reads what the supervisor changes as it reaps a worker (the
    files here; the processes ``ringsum.web.process_metrics`` reads): the directory's shared
    lock, or nothing when this process serves alone."""
    shared = directory()
    return contextlib.nullcontext() if shared is None else _flocked(shared, fcntl.LOCK_SH)


@contextlib.contextmanager
def _flocked(path: str, operation: int) -> Iterator[None]:
    # A descriptor of its own each time: flock belongs to the open file, and with
    # --threads N one scrape's unlock must not drop the lock another one holds.
    fd = os.open(os.path.join(path, _LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)


# -- in the supervisor ---------------------------------------------------------------


class SharedDirectory:
    """The supervisor's side: the directory of one run, and the files of dead workers."""

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def create(cls) -> SharedDirectory:
        """A new empty directory, named in the environment the workers will inherit:
        in memory (/dev/shm) where there is one, since it is rewritten on every request."""
        parent = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        path = tempfile.mkdtemp(prefix="ringsum-metrics-", dir=parent)
        os.environ[ENVIRON] = path
        return cls(path)

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """The directory's exclusive lock: the supervisor reaps a worker and calls
        ``worker_ended`` under it, so no scrape sees that half done."""
        return _flocked(self.path, fcntl.LOCK_EX)

    def worker_ended(self, pid: int) -> None:
        """Drop a reaped worker's live gauges and fold its counts into the archive
        (under ``locked()``)."""
        multiprocess.mark_process_dead(pid, self.path)
        for kind in _FOLDED_KINDS:
            dead = Path(self.path, f"{kind}_{pid}.db")
            if dead.exists():
                self._fold(kind, dead)

    def _fold(self, kind: str, dead: Path) -> None:
        archive = Path(self.path, f"{kind}_{_ARCHIVE}.db")
        parts = [str(path) for path in (archive, dead) if path.exists()]
        merged = multiprocess.MultiProcessCollector.merge(parts, accumulate=False)
        written = Path(self.path, f".{kind}_{_ARCHIVE}.new")  # not *.db until whole
        written.unlink(missing_ok=True)
        target = MmapedDict(str(written))
        try:
            for metric in merged:
                for sample in metric.samples:
                    names, labels = list(sample.labels), list(sample.labels.values())
                    key = mmap_key(metric.name, sample.name, names, labels, metric.documentation)
                    target.write_value(key, sample.value, 0.0)
        finally:
            target.close()
        written.replace(archive)
        dead.unlink()

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if os.environ.get(ENVIRON) == self.path:
            del os.environ[ENVIRON]
