"""Serving: one supervisor that owns the port, and the workers that serve.

The supervisor binds the port itself, without SO_REUSEPORT, so a second server on a
port in use is refused with one line whoever holds it. It forks the workers, which
inherit the socket: connections that arrive while a worker restarts wait in the
backlog instead of being refused. The start line ("serving") is said once a worker has
beaten its heartbeat (below): its app is built (memory storage: the data dir held and
read back) and its loop serves the port, so a start refused on the way never claims to
serve. SIGHUP replaces each worker in turn (the old one stops, then the new one reads
the data dir back); SIGTERM/SIGINT stop everything cleanly, and the last line says so
("stopped", once every worker has closed its storage). A worker whose supervisor
dies, however it died, stops too: nothing orphaned keeps serving.

A worker that dies is replaced. So is one that stops answering: each worker's event
loop beats a heartbeat (``ringsum.serving.heartbeat``) four times a second, and one silent for
longer than ``RINGSUM_WORKER_TIMEOUT`` is SIGKILLed, with one warning line. Its
replacement takes the data dir over (``python app.py`` holds its lock throughout, for
whichever worker serves) and reads back everything it had acknowledged (every
acknowledged write was in the log before its answer). Only a worker
that has beaten once is held to the timeout: building the app and restoring a large data
dir take as long as they take (the wait for a predecessor's data dir is bounded by
HANDOVER_WAIT_S), at the price of not replacing a worker stopped before it ever served.
A request that runs on the loop (one request thread, the default) for longer than the
timeout gets its worker killed, like gunicorn's ``--timeout``.

Workers that keep dying are restarted after a delay that doubles with each quick death
(the first one at once, then 0.1 s up to 10 s) and starts again from nothing once a
worker has lived 30 s: a crash loop costs little CPU and never stops the service, which
starts serving again as soon as whatever killed it is fixed. Only a worker that cannot
start at all (a refused setting, the data dir held by another process) stops the
supervisor: retrying could not help.

Under systemd (``Type=notify``), the supervisor says READY=1 once a worker has beaten
(the app is built and the loop serves the port), RELOADING=1 and READY=1 again around
a SIGHUP, and STOPPING=1 on SIGTERM/SIGINT (``ringsum.serving.sd_notify``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings
from ..core.parent_death import die_with_parent
from ..core.said_once import SaidOnce
from ..core.units import format_duration
from ..http.access_log import AccessLog, AccessLogMode, TrustedProxies
from ..http.edge import Edge, EdgeLimits
from ..web import shared_metrics
from ..web.app import create_app
from ..web.observability import refusal_counter, serving_under
from ..web.process_metrics import Roster, Server
from ..web.state import close_app, is_ringsum
from . import gc_policy
from .heartbeat import Heartbeats
from .sd_notify import Notifier

log = logging.getLogger("ringsum")

STOP_GRACE_S = 10.0  # in-flight requests get this long to finish on SIGTERM
HANDOVER_WAIT_S = STOP_GRACE_S + 20.0  # how long a new worker waits for the data dir
EXIT_START_FAILED = 3  # a worker could not start; the supervisor gives up with it
HEARTBEAT_INTERVAL_S = 0.25  # how often a worker's loop beats (and checks its supervisor is there)
_CHECK_INTERVAL_S = 0.5  # how often the supervisor looks for silent workers, at most
_READY_CHECK_INTERVAL_S = 0.02  # how often it looks for a first heartbeat while systemd waits for READY=1
_BACKOFF_FIRST_S = 0.1  # the delay before restarting after the second quick death in a row
_BACKOFF_MAX_S = 10.0
_LIVED_LONG_S = 30.0  # a worker that lived this long was no crash loop: the delay starts over
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    workers: int
    threads: int
    limits: EdgeLimits
    worker_timeout_s: float = 30.0  # RINGSUM_WORKER_TIMEOUT; 0: never
    access_log: AccessLogMode = AccessLogMode.OFF
    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies)


AppFactory = Callable[[], Any]  # builds the WSGI app inside each worker, after the fork
Describe = Callable[[tuple], str]  # the line said once the port is bound, given its address


def listen(host: str, port: int) -> socket.socket:
    """Bind without SO_REUSEPORT: a port another process holds is refused, not shared."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # only skips TIME_WAIT after a restart
        sock.bind((host, port))
        sock.listen(4096)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def raise_open_file_limit() -> int:
    """Each connection is a file descriptor: take all the OS allows, and say how many."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- the worker ----------------------------------------------------------------------


def run_worker(
    build_app: AppFactory,
    sock: socket.socket,
    options: ServeOptions,
    parent: int,
    connections: int,
    heartbeat: Callable[[], None],
    roster: Roster | None = None,
    said: SaidOnce | None = None,
) -> int:
    """The body of a worker process: build the app (which waits for the data dir a
    predecessor is handing over), serve until told to stop, close. ``heartbeat`` is
    called from the loop while it serves; ``roster`` names its siblings, for /metrics;
    ``said`` keeps the lines about the whole server to one worker."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads are the supervisor's business
    # SIGTERM when the supervisor dies (elsewhere than Linux: keep_in_touch's watch)
    if not die_with_parent(parent, signal.SIGTERM):
        os.kill(os.getpid(), signal.SIGTERM)  # it died before the request took effect
    if said is not None:
        said.install()
    try:
        app = build_app()
    except Exception as error:  # DataDirInUse, an unreadable data dir, Redis settings...
        print(f"ringsum: {error}", file=sys.stderr, flush=True)
        return EXIT_START_FAILED
    on_refusal = refusal_counter(app) if is_ringsum(app) else None
    if is_ringsum(app) and roster is not None:
        serving_under(app, Server(parent, roster, shared_metrics.consistent_read))
    access = None if options.access_log is AccessLogMode.OFF else AccessLog(options.access_log, options.trusted_proxies)
    edge = Edge(app, options.limits, options.threads, connections, on_refusal, access)
    gc_policy.start()  # after the start-up allocations, so the first freeze takes them all
    try:
        _run_loop(_serve_until_stopped(edge, sock, parent, heartbeat))
    finally:
        gc_policy.stop()
        if is_ringsum(app):
            close_app(app)
    return 0


async def _serve_until_stopped(edge: Edge, sock: socket.socket, parent: int, heartbeat: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)

    async def keep_in_touch() -> None:
        """Beat while the loop turns (draining included: a drain is not a hang), and
        stop when the supervisor is gone."""
        while True:
            heartbeat()
            if not stopping.is_set() and os.getppid() != parent:
                log.warning("ringsum worker %d: the supervisor is gone; stopping", os.getpid())
                stopping.set()
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)

    in_touch = loop.create_task(keep_in_touch())
    try:
        await edge.serve(sock, stopping, STOP_GRACE_S)
    finally:
        in_touch.cancel()


def _run_loop(main: object) -> None:
    """uvloop when installed (measured faster), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)  # type: ignore[arg-type]
    else:
        uvloop.run(main)  # type: ignore[arg-type]


# -- the supervisor ------------------------------------------------------------------


class Supervisor:
    """Keeps ``options.workers`` workers serving on ``sock`` until told to stop."""

    def __init__(
        self,
        build_app: AppFactory,
        sock: socket.socket,
        options: ServeOptions,
        notifier: Notifier | None = None,
        status: str = "",
        announce: Callable[[], None] | None = None,
    ) -> None:
        self.build_app = build_app
        self.sock = sock
        self.options = options
        # The start line, said once a worker has beaten: never before the data dir is held
        # and read back, so a start refused on the way says no "serving".
        self.announce = announce
        self.notifier = notifier or Notifier(None)
        self.status = status  # what `systemctl status` shows once serving
        self.awaiting_ready = self.notifier.enabled  # READY=1 is due at the next heartbeat
        self.workers: dict[int, int] = {}  # pid -> slot
        self.born: dict[int, float] = {}  # pid -> when it was forked (monotonic)
        self.restarts: dict[int, float] = {}  # slot -> when its next worker is due (monotonic)
        self.killed_silent: set[int] = set()  # killed for their silence, not reaped yet
        self.quick_deaths = 0  # workers in a row that died before they lived _LIVED_LONG_S
        self.stopped_by = ""  # why it stopped, for the last line: a signal, or a worker that could not start
        self.heartbeats = Heartbeats(options.workers)  # before any fork: every worker shares it
        self.roster = Roster(options.workers)  # likewise: each slot's pid, for process_* on /metrics
        self.said = SaidOnce()  # likewise: lines about the whole server, said by one worker
        self.shared_metrics: shared_metrics.SharedDirectory | None = None
        # Every connection is a file descriptor; keep some for the data dir, Redis, logs.
        self.max_connections = max(16, raise_open_file_limit() - 128)

    def run(self) -> int:
        # Several workers: one /metrics for all of them (ringsum.web.shared_metrics), through a
        # directory of this run, named in the environment before any fork and removed at
        # the end. One worker keeps its metrics in process (cheaper per request). An
        # inherited directory, another run's, is never used.
        os.environ.pop(shared_metrics.ENVIRON, None)
        if self.options.workers > 1:
            self.shared_metrics = shared_metrics.SharedDirectory.create()
        try:
            return self._supervise()
        finally:
            if self.shared_metrics is not None:
                self.shared_metrics.remove()

    def _supervise(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)  # taken one at a time below, never mid-step
        for slot in range(self.options.workers):
            self._spawn(slot)
        status = 0
        while True:
            received = signal.sigtimedwait(_SIGNALS, self._wait_s())
            signum = received.si_signo if received else None
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.notifier.notify("STOPPING=1", "STATUS=stopping")
                self.stopped_by = signal.Signals(signum).name
                break
            if signum == signal.SIGHUP:
                self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
                self._reload()
                self.awaiting_ready = self.notifier.enabled
            failed = self._reap()
            if failed is not None:
                status = failed
                self.stopped_by = "a worker could not start"
                break
            self._kill_silent()
            self._start_due()
            self._say_ready()
        self._stop_all()
        return status

    def _wait_s(self) -> float:
        """How long to wait for a signal: until the next look for silent workers (or for
        a first heartbeat, while systemd waits for it), or until the next restart that
        is due sooner."""
        waiting = self.awaiting_ready or self.announce is not None
        interval = _READY_CHECK_INTERVAL_S if waiting else _CHECK_INTERVAL_S
        if not self.restarts:
            return interval
        return max(0.0, min(interval, min(self.restarts.values()) - time.monotonic()))

    def _say_ready(self) -> None:
        """The start line, and READY=1, once a worker has beaten: its app is built and
        its loop serves the port."""
        if self.announce is None and not self.awaiting_ready:
            return
        if not any(self.heartbeats.silent_for(slot) is not None for slot in self.workers.values()):
            return
        if self.announce is not None:
            self.announce()
            self.announce = None
        if self.awaiting_ready:
            self.notifier.notify("READY=1", f"STATUS={self.status}")
            self.awaiting_ready = False

    def _spawn(self, slot: int) -> None:
        parent = os.getpid()
        self.heartbeats.starting(slot)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                self.roster.started(slot, os.getpid())
                beat = functools.partial(self.heartbeats.beat, slot)
                code = run_worker(
                    self.build_app, self.sock, self.options, parent, self.max_connections, beat, self.roster, self.said
                )
            except BaseException:
                log.exception("ringsum worker %d failed", os.getpid())
            finally:
                logging.shutdown()
                os._exit(code)
        self.roster.started(slot, pid)
        self.workers[pid] = slot
        self.born[pid] = time.monotonic()

    def _reap(self) -> int | None:
        """Schedule a replacement for each worker that died; an exit status to give up
        with (a worker that could not start), or None."""
        while self.workers:
            pid, status = self._wait(-1, os.WNOHANG)
            if pid == 0:
                return None
            slot = self.workers.pop(pid, None)
            if slot is None:
                continue
            lived = time.monotonic() - self.born.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if code == EXIT_START_FAILED:
                log.error("ringsum: a worker could not start; stopping")
                return 1
            delay = self._restart_delay(lived)
            self.restarts[slot] = time.monotonic() + delay
            if pid in self.killed_silent:  # its warning is said already
                self.killed_silent.discard(pid)
                if delay:
                    log.info("ringsum: workers keep dying young; the next one starts in %.1fs", delay)
                continue
            later = f" in {delay:.1f}s (workers keep dying young)" if delay else ""
            log.warning(
                "ringsum worker %d ended (%s, after %.1fs); starting another%s", pid, _ending(code), lived, later
            )
        return None

    def _wait(self, pid: int, options: int) -> tuple[int, int]:
        """``os.waitpid``, and the bookkeeping of the worker it reaps (its slot in the
        roster, its metrics files), as one step to a scrape: with ``--workers N``, under
        the metrics directory's lock (see ringsum.web.process_metrics)."""
        shared = self.shared_metrics
        with shared.locked() if shared is not None else contextlib.nullcontext():
            found, status = os.waitpid(pid, options)
            if found:
                slot = self.workers.get(found)
                if slot is not None:
                    self.roster.ended(slot, found)
                if shared is not None:
                    shared.worker_ended(found)
        return found, status

    def _restart_delay(self, lived: float) -> float:
        """None after a worker that lived long, nor for the first that died young; then
        0.1 s, doubling up to 10 s, while workers keep dying young."""
        if lived >= _LIVED_LONG_S:
            self.quick_deaths = 0
        delay = 0.0 if not self.quick_deaths else _BACKOFF_FIRST_S * 2 ** min(self.quick_deaths - 1, 20)
        self.quick_deaths += 1
        return min(delay, _BACKOFF_MAX_S)

    def _start_due(self) -> None:
        now = time.monotonic()
        for slot, due in list(self.restarts.items()):
            if due <= now:
                del self.restarts[slot]
                self._spawn(slot)

    def _kill_silent(self) -> None:
        """SIGKILL every serving worker whose loop has not beaten for longer than the
        timeout (a worker still starting is not held to it)."""
        timeout = self.options.worker_timeout_s
        if not timeout:
            return
        for pid, slot in self.workers.items():
            silent = self.heartbeats.silent_for(slot)
            if pid in self.killed_silent or silent is None or silent <= timeout:
                continue
            log.warning(
                "ringsum worker %d sent no heartbeat for %.1fs (RINGSUM_WORKER_TIMEOUT=%s): hung or stopped; "
                "killing it and starting another",
                pid,
                silent,
                format_duration(round(timeout * 1_000_000)),
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.killed_silent.add(pid)

    def _reload(self) -> None:
        """Replace each worker in turn: the old one stops (finishing its requests and
        releasing the data dir) before its successor starts and reads the data back."""
        log.info("ringsum: SIGHUP, replacing %d worker(s)", len(self.workers))
        for pid, slot in list(self.workers.items()):
            if pid in self.killed_silent:  # dying already; _reap replaces it
                continue
            self._stop(pid)
            self.workers.pop(pid, None)
            self.born.pop(pid, None)
            self._spawn(slot)

    def _stop(self, pid: int) -> None:
        """Stop one worker: SIGTERM (and SIGCONT, should it be stopped), then SIGKILL once
        it outlived the grace, or once it has been silent past the timeout meanwhile."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGCONT)
        slot = self.workers.get(pid)
        timeout = self.options.worker_timeout_s
        deadline = time.monotonic() + STOP_GRACE_S + 5
        while time.monotonic() < deadline:
            done, _ = self._wait(pid, os.WNOHANG)
            if done:
                return
            silent = None if slot is None or not timeout else self.heartbeats.silent_for(slot)
            if silent is not None and silent > timeout:
                break
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._wait(pid, 0)

    def _stop_all(self) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                os.kill(pid, signal.SIGCONT)
        for pid in list(self.workers):
            self._stop(pid)
        self.workers.clear()
        self.sock.close()


def _ending(code: int) -> str:
    """How a worker ended, from its exit code (negative: the signal that killed it)."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit status {code}"


def run(settings: Settings, host: str, port: int, workers: int, threads: int, describe: Describe) -> int:
    """Serve the app ``settings`` describe: what ``python app.py`` does once they are accepted."""
    limits = EdgeLimits(
        max_body=settings.max_body,
        read_timeout_s=settings.read_timeout_us / 1_000_000,
        idle_timeout_s=settings.idle_timeout_us / 1_000_000,
    )
    # One thread: the request runs on the loop that read it. A pool (--threads N) overlaps
    # Redis round trips but costs a thread hand-over per request: measured, --workers 2 on
    # Redis did 4,712 POST/s inline against 3,081 with two pool threads.
    options = ServeOptions(
        host,
        port,
        workers,
        threads,
        limits,
        settings.worker_timeout_us / 1_000_000,
        settings.access_log,
        settings.trusted_proxies,
    )
    # A worker that replaces another waits for the data dir the old one is handing over.
    build = functools.partial(create_app, lock_timeout_s=HANDOVER_WAIT_S)
    return serve(build, options, describe)


def serve(build_app: AppFactory, options: ServeOptions, describe: Describe | None = None) -> int:
    """Bind the port and keep workers serving ``build_app()`` on it until SIGTERM/SIGINT;
    the exit status. (The benchmarks serve their baselines through here too.)"""
    notifier = Notifier.from_environment()  # the supervisor's alone: no worker inherits it
    try:
        sock = listen(options.host, options.port)
    except OSError as error:
        print(f"ringsum: cannot listen on {options.host}:{options.port}: {error.strerror or error}", file=sys.stderr)
        return 1
    status = describe(sock.getsockname()) if describe is not None else "serving"
    announce = None if describe is None else functools.partial(log.info, status)
    supervisor = Supervisor(build_app, sock, options, notifier, status, announce)
    code = supervisor.run()
    if describe is not None:  # the last line, once every worker has stopped and closed its storage
        log.info("ringsum stopped (%s)", supervisor.stopped_by)
    return code
