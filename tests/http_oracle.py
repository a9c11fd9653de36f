"""The framing oracle of the HTTP corpus: how h11, as a server, frames a byte stream.

h11 is a pure-Python HTTP/1.1 implementation that follows RFC 9112 to the letter and
shares no code with the edge, so where the two disagree on which requests a stream
holds, one of them smuggles. The edge may be stricter (refuse sooner), never looser:
it runs at most what h11 frames here, each request exactly as h11 frames it.

h11 is driven as a server that answers: after each request it sends a response and
starts the next cycle, and it gets the bytes in the same chunks the edge got. It stops
where such a server must stop reading requests:

- ``error``: h11 refuses the bytes (its error ends the connection);
- ``paused``: the request proposed a protocol switch (``Upgrade``, ``CONNECT``): what
  follows is not HTTP/1.1 any more, so nothing after it may be read as a request;
- ``close``: the request ends the connection (``Connection: close``, HTTP/1.0 without
  ``keep-alive``);

and otherwise at the end of the bytes: ``idle`` (between requests) or ``incomplete``
(mid-request).

Two things RFC 9112 lets a server do and h11 does not are modelled on top of it, so
that an edge doing them is not called a smuggler: empty lines (CRLF) before a request
line are skipped (section 2.2; h11 refuses them), and an HTTP/1.0 request saying
``Connection: keep-alive`` keeps the connection (section 9.3; h11 always closes): what
follows is framed by a fresh h11 connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import h11

End = Literal["idle", "incomplete", "error", "paused", "close"]

# Large enough that h11's own size limit (16 KiB by default) never decides a case: the
# oracle is about framing, and the edge's limits are its own (it may refuse sooner).
MAX_INCOMPLETE_EVENT_BYTES = 16 * 1024 * 1024

Fields = tuple[tuple[bytes, bytes], ...]

# What the oracle answers every request with (events are immutable: built once).
_ANSWER = h11.Response(status_code=200, headers=[(b"content-length", b"0")])
_ANSWERED = h11.EndOfMessage()


@dataclass(frozen=True)
class Framed:
    """One request as h11 frames it: header names lower-cased, values as h11 keeps
    them (stripped of surrounding whitespace, never joined)."""

    method: bytes
    target: bytes
    http_version: bytes
    headers: Fields
    body: bytes
    trailers: Fields = ()

    def values(self, name: bytes) -> list[bytes]:
        return [value for header, value in self.headers if header == name]


@dataclass
class Framing:
    """Every request h11 frames in a stream, and why it stops there."""

    requests: list[Framed] = field(default_factory=list)
    end: End = "idle"
    reason: str = ""  # h11's error, or what paused or closed the connection
    # How many heads h11 read (the last one possibly without its whole body) were
    # HTTP/1.1 with ``Expect: 100-continue``: a 100 Continue may answer each of them.
    continues: int = 0


class _Stop(Exception):
    def __init__(self, end: End, reason: str) -> None:
        super().__init__(reason)
        self.end: End = end
        self.reason = reason


def _connection_tokens(request: h11.Request) -> set[bytes]:
    return {
        token.strip(b" \t").lower()
        for name, value in request.headers
        if name == b"connection"
        for token in value.split(b",")
    }


def _framed(request: h11.Request, body: bytes, trailers: Iterable[tuple[bytes, bytes]]) -> Framed:
    # h11 hands out bytes already: the tuples are copied, not their contents.
    return Framed(request.method, request.target, request.http_version, tuple(request.headers), body, tuple(trailers))


def _expects_continue(request: h11.Request) -> bool:
    return request.http_version == b"1.1" and any(
        name == b"expect" and value.lower() == b"100-continue" for name, value in request.headers
    )


class _Oracle:
    """h11 server connections in turn (a fresh one where h11 cannot go on by itself)."""

    def __init__(self) -> None:
        self.framing = Framing()
        self.connection = self._fresh()
        self.between_requests = True  # no byte of the next request reached h11 yet
        self.held_cr = b""  # a CR that may start an empty line, until its LF arrives
        self.request: h11.Request | None = None
        self.body: list[bytes] = []

    @staticmethod
    def _fresh() -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_INCOMPLETE_EVENT_BYTES)

    def feed(self, data: bytes) -> None:
        if self.between_requests:
            data = self._skip_empty_lines(self.held_cr + data)
            if not data:
                return
            self.between_requests = False
        if data:  # h11 reads an empty chunk as the end of the stream
            self.connection.receive_data(data)
        self._frame()

    def _skip_empty_lines(self, data: bytes) -> bytes:
        while data.startswith(b"\r\n"):
            data = data[2:]
        self.held_cr = data if data == b"\r" else b""
        return b"" if self.held_cr else data

    def _frame(self) -> None:
        while True:
            try:
                event = self.connection.next_event()
            except h11.RemoteProtocolError as error:
                raise _Stop("error", str(error)) from None
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:  # only a protocol switch gets here: cycles are started
                raise _Stop("paused", "h11 paused")
            if isinstance(event, h11.Request):
                self.request, self.body = event, []
                self.framing.continues += _expects_continue(event)
            elif isinstance(event, h11.Data):
                self.body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                if self._complete(event):
                    return  # a fresh connection took over and framed the rest
            else:  # ConnectionClosed cannot happen: no end of stream is fed
                raise AssertionError(f"unexpected h11 event {event!r}")

    def _complete(self, end: h11.EndOfMessage) -> bool:
        """Answer the request just framed, as a server would; True when a fresh h11
        connection had to take over the bytes after it."""
        request = self.request
        assert request is not None
        self.framing.requests.append(_framed(request, b"".join(self.body), end.headers))
        self.request, self.body = None, []
        connection = self.connection
        if connection.their_state is h11.MIGHT_SWITCH_PROTOCOL:
            what = "CONNECT" if request.method == b"CONNECT" else "Upgrade"
            raise _Stop("paused", f"{what} proposes a protocol switch: nothing after it is HTTP/1.1")
        connection.send(_ANSWER)
        connection.send(_ANSWERED)
        tokens = _connection_tokens(request)
        if connection.our_state is h11.MUST_CLOSE:
            if not (request.http_version == b"1.0" and b"keep-alive" in tokens and b"close" not in tokens):
                raise _Stop("close", "the request ends the connection")
        else:
            connection.start_next_cycle()
        leftover = bytes(connection.trailing_data[0])
        if connection.our_state is h11.IDLE and not leftover.startswith(b"\r"):
            self.between_requests = not leftover
            return False  # h11 goes on by itself
        # HTTP/1.0 keep-alive, or empty lines h11 would refuse: a fresh connection.
        self.connection = self._fresh()
        self.between_requests = True
        self.feed(leftover)
        return True

    def finish(self) -> Framing:
        framing = self.framing
        framing.end = "incomplete" if self.request is not None or self.connection.trailing_data[0] else "idle"
        return framing


def frame(chunks: Iterable[bytes]) -> Framing:
    """The requests h11 frames in ``chunks`` (fed one by one, as a socket would deliver
    them), up to where a server must stop reading: see the module docstring."""
    oracle = _Oracle()
    try:
        for chunk in chunks:
            oracle.feed(chunk)
    except _Stop as stop:
        oracle.framing.end, oracle.framing.reason = stop.end, stop.reason
        return oracle.framing
    return oracle.finish()
