"""A memory storage's data dir while it serves: restore, log, checkpoints, and whether a
write can be trusted to it right now.

A write is acknowledged only while the data dir can be trusted with it:

- **not durable**: an fsync failed, or the open log segment or the data dir itself was
  deleted or replaced. The journal fails (journal_writer.py) and every write is refused
  with NotDurable (503) until durability is re-established: what memory holds (every
  value the journal ever took) is written to a fresh snapshot, fsynced, a new segment is
  opened, and the old segments are deleted. A deleted data dir is made again; one
  replaced by another holding data is left alone (restart ringsum to serve from it).
- **cannot log**: a ``write()`` of the log failed (disk full, read-only file). That write
  is refused and not applied; the records before it are not in doubt. Writes keep
  trying; ``/readyz`` says not ready until one, or a probe, succeeds.

One thread watches for both: it looks at the data dir's inode and the open segment's
link count four times a second, and tries to come back (probe, or re-establish) once a
second.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from ..core.clock import WindowClock
from . import journal as records
from .base import DataDirError, Marker, NotDurable, StorageError, StorageOptions, StorageUnavailable
from .checkpoint import Restored, load, save
from .datadir import SNAPSHOT_NAME, DataDir
from .journal_writer import Commit, Journal
from .snapshot import Entries, write_snapshot

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.25  # how soon a deleted data dir or segment is noticed
RETRY_INTERVAL_S = 1.0  # how often coming back is tried
CLOCK_MARK_INTERVAL_S = 1.0  # how often the window's clock is logged while it runs ahead of the wall clock
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

Held = tuple[list[tuple[str, Entries]], list[tuple[int, Marker]]]  # keys and live markers, as a snapshot holds them
Capture = Callable[[], Held]  # what memory holds; called with the storage's lock held


class Persistence:
    """The data dir of one memory storage: its lock, its journal, its checkpoints.

    ``lock`` is the storage's own: appends happen under it (log order is apply order),
    and so do the few steps here that must not interleave with a write.
    """

    def __init__(
        self, options: StorageOptions, lock: threading.Lock, clock: WindowClock, lock_timeout_s: float
    ) -> None:
        assert options.data_dir is not None
        self._options = options
        self._lock = lock
        self._clock = clock
        self._data_dir = DataDir(options.data_dir, lock_timeout_s)
        self._journal: Journal | None = None
        self._append_error: str | None = None  # the last append failed, with this
        self._capture: Capture | None = None
        self._stopping = threading.Event()
        self._checkpointing = threading.Lock()  # checkpoints and re-establishing, one at a time
        self._fold: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._next_retry = 0.0
        self._said: str | None = None  # the last reason a comeback failed, said once
        self._steps_marked = clock.steps  # wall-clock steps the log has a clock mark after
        self._next_mark = 0.0

    @property
    def path(self) -> os.PathLike[str]:
        return self._data_dir.path

    # -- start and stop ------------------------------------------------------------------

    def restore(self, max_keys: int | None) -> Restored:
        """Read the data dir back (snapshot plus log, at their own times; what aged out
        while down is dropped), then open a new log segment for this run's writes."""
        data_dir, options = self._data_dir, self._options
        started = time.perf_counter()
        try:
            leftovers = data_dir.remove_temporary_files()
            if leftovers:
                log.info("removed %s, left by a checkpoint a crash cut short", ", ".join(leftovers))
            new = not data_dir.snapshot.exists() and not data_dir.segments()
            restored = load(
                data_dir, options.window_us, options.resolution_us, self._clock(), max_keys=max_keys, repair=True
            )
            self._clock.raise_floor(restored.clock_us)  # never below what a previous run recorded
            if restored.differs_from_files:  # so that later checkpoints fold from what is held
                save(data_dir, restored.last_sequence, restored.sums, restored.markers, restored.clock_us)
            self._journal = self._open_journal(data_dir, restored.last_sequence + 1)
        except OSError as error:  # unreadable or read-only: one line at start, not a traceback
            data_dir.release()
            raise DataDirError(f"cannot restore from the data dir {data_dir.path}: {error}") from error
        except BaseException:
            data_dir.release()
            raise
        if new:
            log.info("new data dir %s: nothing to restore (fsync %s)", data_dir.path, options.fsync.value)
            return restored
        damaged = ""
        if restored.damaged:
            damaged = f"; damaged files kept aside (see the warnings above): {', '.join(restored.damaged)}"
        log.info(
            "restored %d keys and %d entries from %s (%d log records replayed, %d idempotency keys) in %.2fs "
            "(fsync %s)%s",
            len(restored.sums),
            sum(map(len, restored.sums.values())),
            data_dir.path,
            restored.records,
            len(restored.markers),
            time.perf_counter() - started,
            options.fsync.value,
            damaged,
        )
        return restored

    def start(self, capture: Capture) -> None:
        """Start checkpointing and watching; ``capture`` is how memory is read back when
        durability has to be re-established."""
        self._capture = capture
        for target, name in ((self._checkpoint_forever, "checkpoint"), (self._watch_forever, "data-dir-watch")):
            thread = threading.Thread(target=target, name=f"ringsum-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Stop the threads, fsync the log and let go of the data dir. Quick: the log
        holds every write already."""
        self._stopping.set()
        fold = self._fold
        if fold is not None:
            fold.terminate()  # its temporary file is removed at the next start
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        try:
            with self._lock:
                closing, self._journal = self._journal, None
            if closing is not None and not closing.closed:
                if closing.failure is not None:
                    log.error("stopping while %s: what was refused was never acknowledged", closing.failure)
                closing.close()
        finally:
            self._data_dir.release()

    def _open_journal(self, data_dir: DataDir, sequence: int) -> Journal:
        return Journal(data_dir.path, sequence, self._options.fsync, data_dir.segment, self._journal_failed)

    # -- writes (under the storage's lock) ---------------------------------------------

    def log(self, frame: bytes) -> Commit | None:
        """Append a write's record before it is applied; with ``always``, what its answer
        must wait for. Raises StorageUnavailable (NotDurable) and records nothing when the
        log cannot take it."""
        journal = self._journal
        if journal is None:
            raise StorageUnavailable("the storage is closing; nothing was recorded")
        try:
            commit = journal.append(frame)
        except NotDurable:
            raise
        except StorageUnavailable as error:
            self._append_error = str(error)
            raise
        self._append_error = None
        return commit

    def keep_clock(self, now: int) -> None:
        """Log a clock mark (``now``, the window's clock just read) after the wall clock
        stepped, and once a second while the window's clock runs ahead of it: what a
        restart could not tell from the wall clock, so that it never goes below what this
        run read (values aged out stay out). Call without the lock; cheap when not needed."""
        clock = self._clock
        steps = clock.steps
        if steps == self._steps_marked and not (clock.ahead and time.monotonic() >= self._next_mark):
            return
        with self._lock:
            try:
                self.log(records.clock_mark(now))
            except StorageError:
                return  # the log refuses writes: said by /readyz; marked at the next reading
        self._steps_marked, self._next_mark = steps, time.monotonic() + CLOCK_MARK_INTERVAL_S

    def replayed(self) -> Commit | None:
        """What the answer given again to an idempotent retry waits for."""
        journal = self._journal
        if journal is None:
            raise StorageUnavailable("the storage is closing; nothing was recorded")
        return journal.last_commit()

    # -- durability ------------------------------------------------------------------------

    @property
    def problem(self) -> str | None:
        """Why a write would be refused right now, or None."""
        journal = self._journal
        if journal is None:
            return "the storage is closing"
        return journal.failure or self._append_error

    def damaged_files(self) -> int:
        """Damaged files kept in the data dir (0 when it cannot be read)."""
        try:
            return self._data_dir.damaged_files()
        except OSError:
            return 0

    def check(self) -> None:
        """Raise NotDurable, saying why, unless a write would be trusted to the data dir."""
        problem = self.problem
        if problem is not None:
            raise NotDurable(f"writes to the data dir {self._data_dir.path} are refused right now: {problem}")

    def _journal_failed(self, reason: str) -> None:
        log.error(
            "writes refused (503) from now on: %s. Durability is re-established on its own (what memory holds "
            "is written to a new snapshot), tried every %gs",
            reason,
            RETRY_INTERVAL_S,
        )

    def watch(self) -> None:
        """Notice a deleted or replaced data dir or log segment (the journal fails);
        then, at most once a second, try to come back."""
        journal = self._journal
        if journal is None:
            return
        self.keep_clock(self._clock())
        if journal.failure is None:
            gone = self._data_dir.gone()
            if gone is None and journal.segment_unlinked():
                gone = f"the log segment {journal.segment} was deleted"
            if gone is not None:
                journal.fail(gone)
        if self.problem is None or time.monotonic() < self._next_retry:
            return
        self._next_retry = time.monotonic() + RETRY_INTERVAL_S
        if journal.failure is not None:
            self.reestablish(wait=False)
        else:
            self._probe(journal)

    def _probe(self, journal: Journal) -> None:
        """After a failed append: whether the log takes bytes again."""
        with self._lock:
            if self._journal is not journal or self._append_error is None:
                return
            try:
                journal.probe()
            except OSError as error:
                self._say(f"the log in {self._data_dir.path} still cannot be written: {error.strerror or error}")
                return
            self._append_error = None
        self._said = None
        log.warning("the log in %s takes writes again", self._data_dir.path)

    def reestablish(self, *, wait: bool = True) -> bool:
        """After the journal failed: write what memory holds to a new snapshot (fsynced),
        open a new log segment, delete the old ones. Whether writes are trusted again."""
        if not self._checkpointing.acquire(blocking=wait):
            return False  # a checkpoint runs; the next try comes after it
        try:
            failed = self._journal
            if failed is None or self._capture is None or self._stopping.is_set():
                return False
            if failed.failure is None:
                return True
            data_dir = self._usable_data_dir()
            if data_dir is None:
                return False
            with self._lock:
                keys, markers = self._capture()
                covers, now = failed.sequence, self._clock()
            try:
                write_snapshot(data_dir.path, SNAPSHOT_NAME, covers, keys, markers, now)
                data_dir.segment(covers + 1).unlink(missing_ok=True)
                fresh = self._open_journal(data_dir, covers + 1)
            except OSError as error:
                self._say(f"durability cannot be re-established in {data_dir.path} yet: {error.strerror or error}")
                return False
            with self._lock:
                self._journal, self._append_error = fresh, None
            failed.close(sync=False)
            for sequence, path in data_dir.segments():
                if sequence <= covers:
                    path.unlink(missing_ok=True)
            self._said = None
            log.warning(
                "durability re-established in %s: the %d keys held in memory are in a new snapshot; "
                "writes are taken again",
                data_dir.path,
                len(keys),
            )
            return True
        finally:
            self._checkpointing.release()

    def _usable_data_dir(self) -> DataDir | None:
        """The data dir to re-establish durability in: the one held, or a new one where
        it was deleted. None when the path now holds another data dir (or a file)."""
        held = self._data_dir
        reason = held.gone()
        if reason is None:
            return held
        try:
            fresh = DataDir(held.path)  # made again if missing; locked either way
        except DataDirError as error:
            self._say(f"{reason}, and a new one cannot be used there: {error}")
            return None
        if fresh.snapshot.exists() or fresh.segments():
            fresh.release()
            self._say(f"{reason}, by one holding data: restart ringsum to serve from it")
            return None
        held.release()
        self._data_dir = fresh
        log.warning("%s: writing what memory holds to a new data dir there", reason)
        return fresh

    def _say(self, reason: str) -> None:
        """Log why coming back failed, once per reason (it is tried every second)."""
        if reason != self._said:
            log.error("%s; writes stay refused", reason)
            self._said = reason

    def _watch_forever(self) -> None:
        while not self._stopping.wait(WATCH_INTERVAL_S):
            try:
                self.watch()
            except Exception:  # the watch must go on whatever one look raised
                log.exception("watching the data dir failed")

    # -- checkpoints -------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Fold the log into a new snapshot, so the log stays about one interval long.

        Only the rotation to a new log segment holds the lock (a file create); the fold
        runs in a child process, off this process's lock and GIL.
        """
        with self._checkpointing:  # one at a time, whoever asks
            self._checkpoint()

    def _checkpoint(self) -> None:
        journal = self._journal
        if journal is None or journal.failure is not None or not journal.has_records:
            return
        journal.prepare_next()  # the next segment's file, made and fsynced off the lock
        with self._lock:
            if journal is not self._journal or journal.failure is not None:
                return
            closed = journal.rotate()
            now = self._clock()
        journal.seal_closed()
        identity = self._data_dir.identity
        command = [
            sys.executable,
            "-m",
            "ringsum.storage.checkpoint",
            str(self._data_dir.path),
            str(closed),
            f"--window-us={self._options.window_us}",
            f"--resolution-us={self._options.resolution_us}",
            f"--now-us={now}",
            f"--parent-pid={os.getpid()}",
            f"--directory-id={identity[0]}:{identity[1]}",
        ]
        path = os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
        fold = self._fold = subprocess.Popen(
            command, env={**os.environ, "PYTHONPATH": path}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        _, error = fold.communicate()
        self._fold = None
        if fold.returncode and not self._stopping.is_set():
            reason = error.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {fold.returncode}"]
            log.warning("checkpoint failed, the log is kept and folded next time: %s", reason[0])

    def _checkpoint_forever(self) -> None:
        while not self._stopping.wait(self._options.checkpoint_us / 1_000_000):
            try:
                self.checkpoint()
            except (OSError, StorageError) as error:  # a failed checkpoint only leaves a longer log
                log.warning("checkpoint failed, the log is kept and folded next time: %s", error)
            except Exception:
                log.exception("checkpoint failed")


__all__ = ["Capture", "Held", "Persistence"]
