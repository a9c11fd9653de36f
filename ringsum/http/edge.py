"""The edge: reads each whole HTTP/1.1 request, with a deadline, before the app runs.

A slow, stalled or vanished client must never hold the thread that runs Flask, and a
request cut short must never reach it (waitress and nginx buffer whole requests for
the same reason). So one asyncio loop per process owns every socket: it frames requests
with :mod:`ringsum.http.http1` (strict RFC 9112, nothing upgraded or tunnelled), buffers the
body, and only a complete request is handed to the WSGI app: inline on the loop (one
request thread) or on a small thread pool (``threads > 1``, for storage whose calls block
on the network).

What a client can make the process hold is bounded: bytes per request by the reader's
limits, bytes over all connections by ``max_buffered`` (a 503 past it), requests run per
read by a fair share (pipelined ones wait for the next turn of the loop, after every
other connection's), answers a client does not read by the idle timeout. Deadlines are
checked by one periodic task rather than a timer per request: a request pays one clock
read, and thousands of idle sockets cost nothing but memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import io
import logging
import socket
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate
from functools import partial
from typing import Any
from urllib.parse import unquote_to_bytes

from ..core import pending
from ..core.pending import Pending
from .access_log import AccessLog
from .http1 import Refused, Request, RequestReader
from .wire import PROBLEM_MIMETYPE, WHOLE_BODY, problem_json, title

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Answer = tuple[bytes, list[tuple[str, str]], bytes]  # status line, headers, whole body
RefusalHook = Callable[[str], None]  # told the reason label of every refusal (metrics)

REQUESTS_PER_TURN = 1  # pipelined requests answered per turn of the loop before other connections get theirs
# (measured, 10 connections pipelining 20,000 health checks: a legit client's p50 11-12 ms
# with 4 a turn, 2.8-3.5 ms with 1, the flood answered as fast)
DRAIN_LINGER_S = 1.0  # at a stop, a connection idle this long is closed; a busier one answers once more
# At a stop, a request whose head is in has this long for the rest of its body: clients
# (urllib3, curl) send the head and the body in two writes, and a reload must not 503
# every request caught between them; one whose head is still arriving is refused at once.
DRAIN_BODY_S = 0.25
_REAP_INTERVAL_S = 0.25
_DRAIN_REAP_INTERVAL_S = 0.05
_MIN_BUFFERED = 64 * 1024 * 1024
_TRIM_AFTER = 8 * 1024 * 1024  # buffered request bytes at a peak after which the heap is trimmed
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter

_RESTARTING = Refused(503, "restarting", "the server is restarting: send the request again")
_OVERLOADED = Refused(
    503, "overloaded", "the server holds too many unfinished requests right now: send the request again shortly"
)
_EVICTED = Refused(503, "connection_limit", "the server is at its connection limit: send the request again")
_NOT_READ = Refused(0, "send_timeout", "the client did not read its answers")
_SPENT = RequestReader(0)  # what a closed connection reads from: it was told nothing more is read
_SPENT.ended = True


@dataclass(frozen=True)
class EdgeLimits:
    """What a client may send, and for how long it may take to send it."""

    max_body: int
    read_timeout_s: float  # first byte of a request to its last
    idle_timeout_s: float  # a kept-alive connection with nothing under way, or answers left unread


def trim_the_heap() -> None:
    """Give the heap's free pages back to the OS (glibc's ``malloc_trim``): after a burst of
    large bodies, free space below a live allocation is otherwise kept (measured: a worker
    +11 MiB after 200 stalled 1 MiB bodies closed, +0.1 MiB after a trim)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def return_large_buffers_to_the_os() -> None:
    """Allocate request buffers of 128 KiB and more with mmap, always, so each goes back
    to the OS when freed. glibc raises that threshold each time such a block is freed,
    after which large bodies come from the heap, and a burst of stalled 1 MiB bodies
    kept the process hundreds of MiB larger long after their connections closed."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)  # a fixed value also ends the raising


class RefusalLog:
    """Refusals as warnings, at most one line a second: a flood of bad requests must not
    become a flood of log lines. The next line says how many were left out; the metric
    counts every one."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.quiet_until = 0.0
        self.left_out = 0

    def note(self, peer: tuple[str, str], refused: Refused, now: float) -> None:
        if now < self.quiet_until:
            self.left_out += 1
            return
        more = f" (and {self.left_out} more since the last line)" if self.left_out else ""
        status = refused.status or "closed"
        log.warning("refused %s:%s: %s %s: %s%s", *peer, status, refused.reason, refused.detail, more)
        self.left_out = 0
        self.quiet_until = now + self.interval_s


class Edge:
    """One process's serving loop: the listening socket, its connections, the app."""

    def __init__(
        self,
        app: WSGIApp,
        limits: EdgeLimits,
        threads: int = 1,
        max_connections: int = 10_000,
        on_refusal: RefusalHook | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.max_connections = max_connections
        self.max_buffered = max(_MIN_BUFFERED, 4 * limits.max_body)
        self.buffered = 0  # request bytes held by every connection together
        self.buffered_peak = 0  # the most held since the heap was last trimmed
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="ringsum-request") if threads > 1 else None
        self.connections: set[Connection] = set()
        self.held: list[tuple[Connection, Request, Answer, Pending]] = []  # answers waiting for the disk
        self.draining = False
        self.drain_started = 0.0
        self.on_refusal = on_refusal
        self.access_log = access_log
        self.refusals = RefusalLog()
        self.date = b""
        self.refresh_date()
        self.server_name, self.server_port = "127.0.0.1", "0"

    def make_room(self) -> None:
        """At the connection limit, the connection waiting on its client the longest
        (idle, or still sending a request) makes way for a new one: neither idle sockets
        nor slow senders ever lock a new client out."""
        if len(self.connections) < self.max_connections:
            return
        waiting = [connection for connection in self.connections if connection.waits_on_client()]
        if waiting:
            min(waiting, key=Connection.waiting_since).evict()

    def shed(self) -> None:
        """Over the process-wide cap on buffered request bytes, the unfinished requests
        that hold the most are refused (503) until it holds again: a small request from
        a legit client still gets through while stalled bodies fill the cap."""
        while self.buffered > self.max_buffered:
            holding = [connection for connection in self.connections if connection.waits_on_client()]
            if not holding:
                return
            largest = max(holding, key=lambda connection: connection.held)
            if not largest.held:
                return
            largest.refuse(_OVERLOADED)

    def refused(self, peer: tuple[str, str], refusal: Refused) -> None:
        self.refusals.note(peer, refusal, time.monotonic())
        if self.on_refusal is not None:
            self.on_refusal(refusal.reason)

    def refresh_date(self) -> None:
        self.date = formatdate(usegmt=True).encode()

    def hold(self, connection: Connection, request: Request, answer: Answer, held: Pending) -> None:
        """Keep an answer until what it acknowledges is on the disk. The first one held
        in a turn of the loop schedules the release after every request of that turn."""
        if not self.held:
            asyncio.get_running_loop().call_soon(self.release_held)
        self.held.append((connection, request, answer, held))

    def release_held(self) -> None:
        """Group commit: one fsync (of everything written so far) for all the answers
        held this turn, then they leave. It runs on the loop, outside the storage's
        lock; a pool thread waiting at the same time shares it."""
        releasing, self.held = self.held, []
        for connection, request, answer, held in releasing:
            error: Exception | None = None
            try:
                held.wait()  # the first one fsyncs everything written; the others find it done
            except Exception as failed:  # NotDurable: this answer is not an acknowledgement
                error = failed
            connection.held_done(request, answer, error)

    async def serve(self, sock: socket.socket, stopping: asyncio.Event, grace_s: float = 10.0) -> None:
        """Accept on ``sock`` until ``stopping`` is set; then answer what is under way,
        with ``Connection: close``, for up to ``grace_s``."""
        loop = asyncio.get_running_loop()
        return_large_buffers_to_the_os()
        host, port = sock.getsockname()[:2]
        self.server_name, self.server_port = str(host), str(port)
        server = await loop.create_server(lambda: Connection(self), sock=sock, backlog=4096)
        reaper = loop.create_task(self._reap_forever())  # deadlines keep running while draining
        await stopping.wait()
        server.close()  # stop accepting; the socket itself belongs to the supervisor
        self.draining = True
        self.drain_started = time.monotonic()
        for connection in list(self.connections):
            connection.drain()
        deadline = loop.time() + grace_s
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            connection.abort()
        reaper.cancel()
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        if self.access_log is not None:
            self.access_log.flush()

    async def _reap_forever(self) -> None:
        """Answer 408 to requests past their deadline; close idle sockets past theirs."""
        while True:
            await asyncio.sleep(_DRAIN_REAP_INTERVAL_S if self.draining else _REAP_INTERVAL_S)
            self.refresh_date()
            if self.access_log is not None:
                self.access_log.flush()
            if self.buffered_peak > _TRIM_AFTER and self.buffered < _TRIM_AFTER // 8:
                trim_the_heap()  # a burst of large bodies is over
                self.buffered_peak = self.buffered
            now = time.monotonic()
            for connection in list(self.connections):
                connection.check_deadline(now)


class Connection(asyncio.Protocol):
    """One client socket: frame requests, answer them in order, one at a time."""

    __slots__ = (
        "blocked_since",
        "closing",
        "edge",
        "eof",
        "held",
        "in_app",
        "last_active",
        "peer",
        "reader",
        "reading_since",
        "started",
        "transport",
        "turn_pending",
        "writable",
    )

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.reader = RequestReader(edge.limits.max_body)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, str] = ("", "")
        self.in_app = False  # a request is on the thread pool
        self.turn_pending = False  # pipelined requests wait for this connection's next turn
        self.closing = False
        self.writable = True
        self.eof = False  # the client sent all it ever will
        self.held = 0  # bytes of this connection counted in edge.buffered
        self.reading_since: float | None = None  # bytes of a request not yet whole arrived since
        self.blocked_since: float | None = None  # the client stopped reading its answers at
        self.last_active = time.monotonic()
        self.started = 0.0  # perf_counter() when the request being answered was whole

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (str(peer[0]), str(peer[1]))
        self.edge.make_room()
        self.edge.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        # A request not complete by now is dropped unseen: the app never runs for it.
        self.edge.connections.discard(self)
        self.closing = True
        self.transport = None  # no cycle left: the connection and what it held go at once
        self._release()

    def _release(self) -> None:
        """Drop the bytes of a request that will never be taken."""
        self.edge.buffered -= self.held
        self.held = 0
        self.reader = _SPENT

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # after a refusal or the last request: nothing more is read
        if self.reading_since is None:
            self.reading_since = time.monotonic()
        self.reader.feed(data)
        self._count_held()
        if self.edge.buffered > self.edge.max_buffered:
            self.edge.shed()
        self._take_turn()

    def eof_received(self) -> bool:
        self.eof = True  # answer what arrived whole, then close (see _take_turn)
        self._take_turn()
        return True

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests until it does.
        self.writable = False
        self.blocked_since = time.monotonic()
        self._read_while_ready()

    def resume_writing(self) -> None:
        self.writable = True
        self.blocked_since = None
        self._take_turn()

    # -- requests ------------------------------------------------------------------

    def _take_turn(self) -> None:
        """Answer the whole requests that arrived, in order, a few per turn of the loop."""
        self.turn_pending = False
        budget = REQUESTS_PER_TURN
        while not self.closing and not self.in_app and self.writable:
            try:
                request = self.reader.next_request()
            except Refused as refusal:
                self.refuse(refusal)
                return
            if request is None:
                if self.reader.wants_turn:  # a long chunked body: the rest after the others' turn
                    self._next_turn()
                elif self.reader.take_continue() and self.transport is not None:
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits for it on bodies over 1 KiB
                break
            self.reading_since = time.monotonic() if self.reader.mid_request else None
            self._count_held()
            self._run(request)
            budget -= 1
            if not budget and self.reader.mid_request and not self.closing:
                self._next_turn()  # the rest of a pipeline after every other connection's turn
                break
        if self.eof and not (self.closing or self.in_app or self.turn_pending):
            self.close()  # the client is done sending, and nothing whole is left
        self._read_while_ready()

    def _next_turn(self) -> None:
        self.turn_pending = True
        asyncio.get_running_loop().call_soon(self._take_turn)

    def _read_while_ready(self) -> None:
        """Read from the socket only while an answer could be written and nothing waits,
        so a client cannot pile up requests that we hold in memory."""
        transport = self.transport
        if transport is None or self.closing or self.eof:
            return
        if self.writable and not self.in_app and not self.turn_pending and not self.reader.ended:
            transport.resume_reading()
        else:
            transport.pause_reading()

    def _count_held(self) -> None:
        held = self.reader.held
        edge = self.edge
        edge.buffered += held - self.held
        self.held = held
        if edge.buffered > edge.buffered_peak:
            edge.buffered_peak = edge.buffered

    def _run(self, request: Request) -> None:
        self.started = time.perf_counter()
        environ = self._environ(request)
        pool = self.edge.pool
        if pool is None:
            self._answer(request, *_call_app_held(self.edge.app, environ))
            return
        self.in_app = True
        future = asyncio.get_running_loop().run_in_executor(pool, _call_app_held, self.edge.app, environ)
        future.add_done_callback(partial(self._app_done, request))

    def _app_done(self, request: Request, done: asyncio.Future) -> None:
        self.in_app = False
        if self.closing or self.transport is None:
            return
        self._answer(request, *done.result())
        self._take_turn()

    def _answer(self, request: Request, answer: Answer, held: Pending | None) -> None:
        """Write ``answer`` now, or at the end of this turn of the loop once what it
        acknowledges is on the disk (see Edge.release_held); this connection's next
        request waits its turn, in order."""
        if held is None:
            self._write_response(request, *answer)
            return
        self.in_app = True
        self.edge.hold(self, request, answer, held)

    def held_done(self, request: Request, answer: Answer, error: Exception | None) -> None:
        self.in_app = False
        if self.closing or self.transport is None:
            return
        if error is not None:  # the write could not be made durable: it is not acknowledged
            body = problem_json(503, f"{error}; retry shortly")
            answer = (b"503 Service Unavailable", [("Content-Type", PROBLEM_MIMETYPE), ("Retry-After", "1")], body)
        self._write_response(request, *answer)
        self._take_turn()

    def _environ(self, request: Request) -> dict[str, Any]:
        """The WSGI environ of a whole request; its body whole, so never chunked."""
        path, _, query = request.target.partition(b"?")
        if b"%" in path:
            path = unquote_to_bytes(path)
        body = request.body
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": path.decode("latin-1"),
            "QUERY_STRING": query.decode("latin-1"),
            "SERVER_NAME": self.edge.server_name,
            "SERVER_PORT": self.edge.server_port,
            "SERVER_PROTOCOL": request.version,
            "REMOTE_ADDR": self.peer[0],
            "REMOTE_PORT": self.peer[1],
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            WHOLE_BODY: body,
            "wsgi.input_terminated": True,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": self.edge.pool is not None,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in request.headers:
            if name == b"content-type":
                key = "CONTENT_TYPE"
            elif name in (b"content-length", b"transfer-encoding"):
                continue  # the body is whole: the app sees its length instead
            else:
                key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
            text = value.decode("latin-1")
            environ[key] = f"{environ[key]},{text}" if key in environ else text
        if body or request.chunked:
            environ["CONTENT_LENGTH"] = str(len(body))
        return environ

    # -- answering -----------------------------------------------------------------

    def _write_response(self, request: Request, status: bytes, headers: list[tuple[str, str]], body: bytes) -> None:
        keep_alive = request.keep_alive and not self.closing and not self.edge.draining
        head = [b"HTTP/1.1 ", status, b"\r\nServer: ringsum\r\nDate: ", self.edge.date, b"\r\n"]
        has_length = False
        for name, value in headers:
            if name.lower() == "content-length":
                has_length = True
            head += [name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n"]
        if not has_length and not status.startswith((b"204", b"304")):
            head.append(b"Content-Length: %d\r\n" % len(body))
        if not keep_alive:
            head.append(b"Connection: close\r\n")
        elif request.version == "HTTP/1.0":
            head.append(b"Connection: keep-alive\r\n")
        head.append(b"\r\n")
        transport = self.transport
        if transport is None:
            return
        transport.write(b"".join(head) + body)
        self.last_active = time.monotonic()
        access_log = self.edge.access_log
        if access_log is not None:
            self._log_access(access_log, request, int(status[:3]), len(body))
        if not keep_alive:
            self.close()

    def _log_access(self, access_log: AccessLog, request: Request, status: int, size: int) -> None:
        forwarded = None
        if access_log.trusted.networks:
            forwarded = next(
                (value.decode("latin-1") for name, value in request.headers if name == b"x-forwarded-for"), None
            )
        target = request.target.decode("latin-1")
        access_log.answered(
            self.peer[0],
            forwarded,
            f"{request.method} {target} {request.version}",
            request.method,
            target,
            status,
            size,
            time.perf_counter() - self.started,
        )

    def refuse(self, refusal: Refused) -> None:
        """Answer what the edge cannot take, then close: what follows on this socket can
        no longer be framed safely."""
        self.edge.refused(self.peer, refusal)
        self._release()
        transport = self.transport
        if self.closing or transport is None or transport.is_closing():
            self.closing = True
            return
        if self.in_app:  # an answer is still being made: nothing may overtake it
            self.abort()
            return
        body = problem_json(refusal.status, refusal.detail)
        if self.edge.access_log is not None:
            self.edge.access_log.answered(self.peer[0], None, "-", "-", "-", refusal.status, len(body), 0.0)
        retry = b"Retry-After: 1\r\n" if refusal.status == 503 else b""
        transport.write(
            b"HTTP/1.1 %d %s\r\nServer: ringsum\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            b"%sConnection: close\r\n\r\n%s"
            % (
                refusal.status,
                title(refusal.status).encode(),
                self.edge.date,
                PROBLEM_MIMETYPE.encode(),
                len(body),
                retry,
                body,
            )
        )
        self.close()

    # -- deadlines, room and stopping -----------------------------------------------------

    def check_deadline(self, now: float) -> None:
        limits = self.edge.limits
        if self.closing:
            return
        if self.blocked_since is not None:
            if now - self.blocked_since > limits.idle_timeout_s:
                self.edge.refused(self.peer, _NOT_READ)
                self.abort()  # what is queued for a client that does not read is dropped
            return
        if self.in_app or self.turn_pending:
            return
        draining = self.edge.draining
        if self.reading_since is not None:
            if now - self.reading_since > limits.read_timeout_s:
                detail = f"the request took longer than {limits.read_timeout_s:g}s to arrive: send it whole"
                self.refuse(Refused(408, "read_timeout", detail))
            elif draining and (not self.reader.reading_body or now - self.edge.drain_started > DRAIN_BODY_S):
                self.refuse(_RESTARTING)
        elif now - self.last_active > (DRAIN_LINGER_S if draining else limits.idle_timeout_s):
            self.close()

    def waits_on_client(self) -> bool:
        """Nothing of ours is under way: the connection is idle, or a request is arriving."""
        return not (self.closing or self.in_app or self.turn_pending)

    def waiting_since(self) -> float:
        return self.reading_since if self.reading_since is not None else self.last_active

    def evict(self) -> None:
        if self.reading_since is not None:
            self.refuse(_EVICTED)
        else:
            self.close()

    def drain(self) -> None:
        """At a stop or reload: a request being answered gets ``Connection: close``; a
        request whose head is still arriving is refused at once with a 503 the client may
        retry (a stop waits only for requests already being answered), one whose head is
        in gets DRAIN_BODY_S for its body; an idle connection is closed once idle for
        DRAIN_LINGER_S, so a request already on its way is answered rather than reset.
        The reaper enforces the deadlines."""
        if self.closing or self.in_app or self.turn_pending:
            return
        if not self.writable:
            self.abort()
        elif self.reading_since is not None and not self.reader.reading_body:
            self.refuse(_RESTARTING)
        elif self.reading_since is None and time.monotonic() - self.last_active > DRAIN_LINGER_S:
            self.close()

    def close(self) -> None:
        """Close once what was written is sent."""
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close now, dropping anything not yet sent."""
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


def _call_app_held(app: WSGIApp, environ: dict[str, Any]) -> tuple[Answer, Pending | None]:
    """Run the app, collecting what its answer must wait for before it leaves."""
    pending.collect()
    try:
        answer = _call_app(app, environ)
    finally:
        held = pending.collected()
    return answer, held


def _call_app(app: WSGIApp, environ: dict[str, Any]) -> Answer:
    """Run the WSGI app to completion: its status line, headers and whole body."""
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        started[:] = [status, headers]
        return _no_write

    try:
        result = app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    except Exception:  # Flask answers its own errors; this is a failure around it
        log.exception("the app failed on %s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"])
        body = problem_json(500, "the server failed to answer this request; it has been logged")
        return b"500 Internal Server Error", [("Content-Type", PROBLEM_MIMETYPE)], body
    return started[0].encode("latin-1"), started[1], body


def _no_write(data: bytes) -> None:
    raise RuntimeError("the legacy WSGI write() callable is not supported")
