"""Serving: one supervisor that owns the port, and the workers that serve.

The supervisor binds the port itself, without SO_REUSEPORT, so a second server on a
port in use is refused with one line whoever holds it. It forks the workers, which
inherit the socket: connections that arrive while a worker restarts wait in the
backlog instead of being refused. The start line ("serving") is said once the first
workers have built their apps (memory storage: the data dir held and read back), so a
start refused on the way never claims to serve. A worker that dies is replaced;
SIGHUP replaces each worker in turn (the old one stops, then the new one reads the
data dir back); SIGTERM/SIGINT stop everything cleanly. A worker whose
supervisor dies, however it died, stops too: nothing orphaned keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask

from . import create_app, gc_policy
from .config import Settings
from .edge import Edge, EdgeLimits
from .observability import refusal_counter
from .state import close_app, is_ringsum

log = logging.getLogger("ringsum")

STOP_GRACE_S = 10.0  # in-flight requests get this long to finish on SIGTERM
HANDOVER_WAIT_S = STOP_GRACE_S + 20.0  # how long a new worker waits for the data dir
EXIT_START_FAILED = 3  # a worker could not start; the supervisor gives up with it
_RESTARTS_ALLOWED = 5  # worker deaths within _RESTART_WINDOW_S before the supervisor gives up
_RESTART_WINDOW_S = 30.0
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    workers: int
    threads: int
    limits: EdgeLimits


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


def _die_with_parent(parent: int) -> None:
    """Ask Linux to send SIGTERM when the supervisor dies (other systems: the worker's
    own watch of its parent id, every quarter second, does the same)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request above took effect
        os.kill(os.getpid(), signal.SIGTERM)


def run_worker(
    build_app: AppFactory, sock: socket.socket, options: ServeOptions, parent: int, connections: int, ready: int
) -> int:
    """The body of a worker process: build the app (which waits for the data dir a
    predecessor is handing over, then reads it back), tell the supervisor on ``ready``
    (a pipe), serve until told to stop, close."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads are the supervisor's business
    _die_with_parent(parent)
    try:
        app = build_app()
    except Exception as error:  # DataDirInUse, an unreadable data dir, Redis settings...
        print(f"ringsum: {error}", file=sys.stderr, flush=True)
        return EXIT_START_FAILED
    os.write(ready, b"\n")
    on_refusal = refusal_counter(app) if is_ringsum(app) else None
    edge = Edge(app, options.limits, options.threads, connections, on_refusal)
    gc_policy.start()  # after the start-up allocations, so the first freeze takes them all
    try:
        _run_loop(_serve_until_stopped(edge, sock, parent))
    finally:
        gc_policy.stop()
        if isinstance(app, Flask):
            close_app(app)
    return 0


async def _serve_until_stopped(edge: Edge, sock: socket.socket, parent: int) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)

    async def watch_parent() -> None:
        while not stopping.is_set():
            if os.getppid() != parent:
                log.warning("ringsum worker %d: the supervisor is gone; stopping", os.getpid())
                stopping.set()
            await asyncio.sleep(0.25)

    watcher = loop.create_task(watch_parent())
    await edge.serve(sock, stopping, STOP_GRACE_S)
    watcher.cancel()


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
        self, build_app: AppFactory, sock: socket.socket, options: ServeOptions, announce: Callable[[], None]
    ) -> None:
        self.build_app = build_app
        self.sock = sock
        self.options = options
        # Said once every first worker has built its app (its data dir held and read
        # back): a start refused on the way says no "serving" line.
        self.announce: Callable[[], None] | None = announce
        self.unready = options.workers
        self.ready_read, self.ready_write = os.pipe()  # each worker writes a byte once it serves
        os.set_blocking(self.ready_read, False)
        self.workers: dict[int, int] = {}  # pid -> slot
        # Every connection is a file descriptor; keep some for the data dir, Redis, logs.
        self.max_connections = max(16, raise_open_file_limit() - 128)
        self.deaths: list[float] = []

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)  # taken one at a time below, never mid-step
        for slot in range(self.options.workers):
            self._spawn(slot)
        status = 0
        while True:
            received = signal.sigtimedwait(_SIGNALS, 0.5 if self.announce is None else 0.02)
            signum = received.si_signo if received else None
            if signum in (signal.SIGTERM, signal.SIGINT):
                break
            if signum == signal.SIGHUP:
                self._reload()
            failed = self._reap()
            if failed is not None:
                status = failed
                break
            self._count_ready()
        self._stop_all()
        return status

    def _count_ready(self) -> None:
        """Read what workers wrote on the ready pipe; announce once the first ones all did."""
        try:
            self.unready -= len(os.read(self.ready_read, 4096))
        except BlockingIOError:
            return
        if self.unready <= 0 and self.announce is not None:
            self.announce()
            self.announce = None

    def _spawn(self, slot: int) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                code = run_worker(
                    self.build_app, self.sock, self.options, parent, self.max_connections, self.ready_write
                )
            except BaseException:
                log.exception("ringsum worker %d failed", os.getpid())
            finally:
                logging.shutdown()
                os._exit(code)
        self.workers[pid] = slot

    def _reap(self) -> int | None:
        """Replace workers that died; an exit status to give up with, or None."""
        while self.workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return None
            slot = self.workers.pop(pid, None)
            if slot is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if code == EXIT_START_FAILED:
                log.error("ringsum: a worker could not start; stopping")
                return 1
            now = time.monotonic()
            self.deaths = [at for at in self.deaths if now - at < _RESTART_WINDOW_S] + [now]
            if len(self.deaths) > _RESTARTS_ALLOWED:
                log.error("ringsum: workers keep dying (%d in %ds); stopping", len(self.deaths), _RESTART_WINDOW_S)
                return 1
            log.warning("ringsum worker %d ended (status %d); starting another", pid, code)
            self._spawn(slot)
        return None

    def _reload(self) -> None:
        """Replace each worker in turn: the old one stops (finishing its requests and
        releasing the data dir) before its successor starts and reads the data back."""
        log.info("ringsum: SIGHUP, replacing %d worker(s)", len(self.workers))
        for pid, slot in list(self.workers.items()):
            self._stop(pid)
            self.workers.pop(pid, None)
            self._spawn(slot)

    def _stop(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S + 5
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

    def _stop_all(self) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in list(self.workers):
            self._stop(pid)
        self.workers.clear()
        self.sock.close()


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
    options = ServeOptions(host, port, workers, threads, limits)
    # A worker that replaces another waits for the data dir the old one is handing over.
    build = functools.partial(create_app, lock_timeout_s=HANDOVER_WAIT_S)
    return serve(build, options, describe)


def serve(build_app: AppFactory, options: ServeOptions, describe: Describe | None = None) -> int:
    """Bind the port and keep workers serving ``build_app()`` on it until SIGTERM/SIGINT;
    the exit status. (The benchmarks serve their baselines through here too.)"""
    try:
        sock = listen(options.host, options.port)
    except OSError as error:
        print(f"ringsum: cannot listen on {options.host}:{options.port}: {error.strerror or error}", file=sys.stderr)
        return 1
    address = sock.getsockname()

    def announce() -> None:
        if describe is not None:
            log.info(describe(address))

    return Supervisor(build_app, sock, options, announce).run()
