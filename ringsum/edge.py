"""The edge: reads each whole HTTP/1.1 request, with a deadline, before the app runs.

A slow, stalled or vanished client must never hold the thread that runs Flask, and a
request cut short must never reach it (waitress and nginx buffer whole requests for
the same reason). So one asyncio loop per process owns every socket: it parses with
llhttp (``httptools``, Node.js's strict parser), buffers the body, and only a complete
request is handed to the WSGI app: inline on the loop (one request thread) or on a
small thread pool (``threads > 1``, for storage whose calls block on the network).

Deadlines are checked by one periodic task rather than a timer per request: a request
pays one clock read, and thousands of idle sockets cost nothing but memory.
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote_to_bytes

import httptools

from .body_limit import WHOLE_BODY
from .problems import problem_json, title

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

MAX_URL_BYTES = 8 * 1024  # nginx's default for a request line
MAX_HEADER_BYTES = 32 * 1024  # all header names and values together
MAX_HEADERS = 100
_REAP_INTERVAL_S = 0.25


@dataclass(frozen=True)
class EdgeLimits:
    """What a client may send, and for how long it may take to send it."""

    max_body: int
    read_timeout_s: float  # first byte of a request to its last
    idle_timeout_s: float  # a kept-alive connection with no request under way


class _Refusal(Exception):
    """The request cannot be taken: answer ``status`` with a problem and close."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _parser_refusal(error: Exception) -> _Refusal:
    message = str(error)
    if "Content-Length" in message and "Transfer-Encoding" in message:
        return _Refusal(
            400,
            "Content-Length and Transfer-Encoding together are ambiguous (RFC 9112 section 6.3): send only one",
        )
    return _Refusal(400, f"the request is not valid HTTP/1.1 ({message}): check how the client frames it")


class Edge:
    """One process's serving loop: the listening socket, its connections, the app."""

    def __init__(self, app: WSGIApp, limits: EdgeLimits, threads: int = 1, max_connections: int = 10_000) -> None:
        self.app = app
        self.limits = limits
        self.max_connections = max_connections
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="ringsum-request") if threads > 1 else None
        self.connections: set[Connection] = set()
        self.date = b""
        self.refresh_date()
        self.server_name, self.server_port = "127.0.0.1", "0"

    def make_room(self) -> None:
        """At the connection limit, the connection idle the longest makes way for a new
        one: idle sockets never lock a new client out."""
        if len(self.connections) < self.max_connections:
            return
        idle = [connection for connection in self.connections if connection.is_idle()]
        if idle:
            min(idle, key=lambda connection: connection.idle_since).abort()

    def refresh_date(self) -> None:
        self.date = formatdate(usegmt=True).encode()

    async def serve(self, sock: socket.socket, stopping: asyncio.Event, grace_s: float = 10.0) -> None:
        """Accept on ``sock`` until ``stopping`` is set; then finish what is under way."""
        loop = asyncio.get_running_loop()
        host, port = sock.getsockname()[:2]
        self.server_name, self.server_port = str(host), str(port)
        server = await loop.create_server(lambda: Connection(self), sock=sock, backlog=4096)
        reaper = loop.create_task(self._reap_forever(stopping))
        await stopping.wait()
        server.close()  # stop accepting; the socket itself belongs to the supervisor
        for connection in list(self.connections):
            connection.close_when_idle()
        deadline = loop.time() + grace_s
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            connection.abort()
        reaper.cancel()
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    async def _reap_forever(self, stopping: asyncio.Event) -> None:
        """Answer 408 to requests past their deadline; close idle sockets past theirs."""
        while not stopping.is_set():
            await asyncio.sleep(_REAP_INTERVAL_S)
            self.refresh_date()
            now = time.monotonic()
            for connection in list(self.connections):
                connection.check_deadline(now)


class Connection(asyncio.Protocol):
    """One client socket: parse requests, buffer each whole, answer them in order."""

    __slots__ = (
        "body",
        "body_bytes",
        "chunked",
        "closing",
        "edge",
        "header_bytes",
        "headers",
        "idle_since",
        "in_app",
        "parser",
        "peer",
        "queue",
        "reading_since",
        "transport",
        "url",
        "writable",
    )

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, str] = ("", "")
        self.queue: deque[dict[str, Any]] = deque()
        self.in_app = False
        self.closing = False
        self.writable = True
        self.reading_since: float | None = None  # a request has begun and is not complete
        self.idle_since = time.monotonic()
        self._reset_request()

    def _reset_request(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.chunked = False

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
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # the request itself is complete; no protocol switch is offered
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            self.refuse(cause if isinstance(cause, _Refusal) else _parser_refusal(error))
            return
        except httptools.HttpParserError as error:
            self.refuse(_parser_refusal(error))
            return
        except _Refusal as refusal:
            self.refuse(refusal)
            return
        self._run_queue()

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests until it does.
        self.writable = False
        self._read_while_ready()

    def resume_writing(self) -> None:
        self.writable = True
        self._read_while_ready()
        self._run_queue()

    def _read_while_ready(self) -> None:
        """Read from the socket only while an answer could be written and none is pending
        from the thread pool, so a client cannot pile up requests we hold in memory."""
        transport = self.transport
        if transport is None or self.closing:
            return
        if self.writable and not self.in_app:
            transport.resume_reading()
        else:
            transport.pause_reading()

    # -- llhttp callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self.reading_since = time.monotonic()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_URL_BYTES:
            raise _Refusal(414, f"the URL is longer than {MAX_URL_BYTES} bytes: shorten it")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        self.headers.append((name, value))
        if self.header_bytes > MAX_HEADER_BYTES or len(self.headers) > MAX_HEADERS:
            raise _Refusal(
                431, f"the headers are larger than {MAX_HEADER_BYTES} bytes or {MAX_HEADERS} fields: send fewer"
            )

    def on_headers_complete(self) -> None:
        limit = self.edge.limits.max_body
        expects_continue = False
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length" and int(value) > limit:
                raise _too_large(limit)  # refused before a byte of the body is read
            if lowered == b"transfer-encoding":
                if value.strip().lower() != b"chunked":
                    raise _Refusal(400, "Transfer-Encoding must be chunked (no other coding is taken): send it plain")
                self.chunked = True
            elif lowered == b"expect":
                expects_continue = value.lower() == b"100-continue"
        if expects_continue and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits for it on bodies over 1 KiB

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.body_bytes += len(body)
        if self.body_bytes > self.edge.limits.max_body:  # only a chunked body can get here
            raise _too_large(self.edge.limits.max_body)

    def on_message_complete(self) -> None:
        self.reading_since = None
        self.queue.append(self._environ())
        self._reset_request()

    # -- answering -----------------------------------------------------------------

    def _environ(self) -> dict[str, Any]:
        """The WSGI environ of the request just read; its body whole, so never chunked."""
        url = self.url
        path, _, query = url.partition(b"?")
        if b"%" in path:
            path = unquote_to_bytes(path)
        body = b"".join(self.body)
        parser = self.parser
        environ: dict[str, Any] = {
            "REQUEST_METHOD": parser.get_method().decode("ascii"),
            "SCRIPT_NAME": "",
            "PATH_INFO": path.decode("latin-1"),
            "QUERY_STRING": query.decode("latin-1"),
            "SERVER_NAME": self.edge.server_name,
            "SERVER_PORT": self.edge.server_port,
            "SERVER_PROTOCOL": "HTTP/" + parser.get_http_version(),
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
            "ringsum.keep_alive": parser.should_keep_alive(),
        }
        for name, value in self.headers:
            key = name.decode("latin-1").upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                pass
            elif key == "TRANSFER_ENCODING":
                continue  # the body is whole: the app sees its length instead
            else:
                key = "HTTP_" + key
            text = value.decode("latin-1")
            environ[key] = f"{environ[key]},{text}" if key in environ and key.startswith("HTTP_") else text
        if body or self.chunked:
            environ["CONTENT_LENGTH"] = str(len(body))
        return environ

    def _run_queue(self) -> None:
        """Answer the complete requests in order, one at a time per connection."""
        while self.queue and not self.in_app and not self.closing and self.writable:
            environ = self.queue.popleft()
            pool = self.edge.pool
            if pool is None:
                self._write_response(environ, *_call_app(self.edge.app, environ))
                continue
            self.in_app = True
            self._read_while_ready()  # pipelined requests wait in the socket
            future = asyncio.get_running_loop().run_in_executor(pool, _call_app, self.edge.app, environ)
            future.add_done_callback(lambda done, environ=environ: self._app_done(environ, done))

    def _app_done(self, environ: dict[str, Any], done: asyncio.Future) -> None:
        self.in_app = False
        if self.closing or self.transport is None:
            return
        self._write_response(environ, *done.result())
        self._read_while_ready()
        self._run_queue()

    def _write_response(
        self, environ: dict[str, Any], status: bytes, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        keep_alive = environ["ringsum.keep_alive"] and not self.closing
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
        elif environ["SERVER_PROTOCOL"] == "HTTP/1.0":
            head.append(b"Connection: keep-alive\r\n")
        head.append(b"\r\n")
        transport = self.transport
        if transport is None:
            return
        transport.write(b"".join(head) + body)
        self.idle_since = time.monotonic()
        if not keep_alive:
            self.closing = True
            transport.close()

    def refuse(self, refusal: _Refusal) -> None:
        """Answer a request the edge cannot take, then close: what follows on this
        socket can no longer be framed safely."""
        self.closing = True
        self.reading_since = None
        if self.transport is None or self.transport.is_closing():
            return
        body = problem_json(refusal.status, refusal.detail)
        reason = title(refusal.status).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nServer: ringsum\r\nDate: %s\r\nContent-Type: application/problem+json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (refusal.status, reason, self.edge.date, len(body), body)
        )
        self.transport.close()

    # -- deadlines ---------------------------------------------------------------------

    def check_deadline(self, now: float) -> None:
        limits = self.edge.limits
        if self.reading_since is not None:
            if now - self.reading_since > limits.read_timeout_s:
                self.refuse(
                    _Refusal(408, f"the request took longer than {limits.read_timeout_s:g}s to arrive: send it whole")
                )
        elif self.is_idle() and now - self.idle_since > limits.idle_timeout_s:
            self.abort()

    def is_idle(self) -> bool:
        """No request being read, waiting, or answered."""
        return self.reading_since is None and not self.in_app and not self.queue

    def close_when_idle(self) -> None:
        """At shutdown: close now unless a request is being read or answered."""
        if self.is_idle():
            self.abort()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


def _too_large(limit: int) -> _Refusal:
    return _Refusal(413, f"the body is larger than RINGSUM_MAX_BODY ({limit} bytes): send less, or split a batch")


def _call_app(app: WSGIApp, environ: dict[str, Any]) -> tuple[bytes, list[tuple[str, str]], bytes]:
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
        return b"500 Internal Server Error", [("Content-Type", "application/problem+json")], body
    return started[0].encode("latin-1"), started[1], body


def _no_write(data: bytes) -> None:
    raise RuntimeError("the legacy WSGI write() callable is not supported")
