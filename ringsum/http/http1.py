"""Strict HTTP/1.1 request framing (RFC 9112), with no I/O: bytes in, whole requests out.

The edge used llhttp (httptools) before. It framed well, but it buffered a header line of
any length before calling back, read a body after ``Upgrade`` and then stopped parsing,
merged trailers into headers and left chunk extensions unbounded: every one of those
was a way to smuggle a request or exhaust memory. This reader refuses anything it cannot
frame in exactly one way, counts every byte before it parses it, and hands out a
request only once its body is whole. What it refuses is a :class:`Refused` with a
status, a reason label (for logs and metrics) and a detail that says what to fix; the
edge answers it and closes the connection, since what follows can no longer be framed.

Where RFC 9112 lets a server choose, it chooses as nginx does, or stricter: a repeated
``Content-Length``/``Host``/``Authorization``/``Idempotency-Key`` is a 400 even when the
copies agree, header names with ``_`` are dropped (never read as ``-``), trailers are
read and discarded, and a request that names ``Upgrade`` is answered and then the
connection ends, so nothing after it is ever read as a request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_URL_BYTES = 8 * 1024  # nginx's default for a request line
MAX_HEADER_BYTES = 32 * 1024  # every header line together (and the trailers, apart)
MAX_HEADERS = 100
MAX_CHUNK_LINE = 1024  # a chunk-size line with its extensions
MAX_CHUNKS = 16_384  # per body: a generator that yields one batch event per chunk still fits
MAX_CHUNK_FRAMING = 256 * 1024  # chunk-size lines and CRLFs of one body together

CHUNKS_PER_TURN = 64  # chunks decoded before other connections get a turn of the loop (10 connections in 1-byte chunks: legit p50 3.7-5.5 ms with 64, 8.6-13.7 ms with 256)

# RFC 9110's grammar, as patterns that run in C: a request pays one match for its request
# line and two passes over its header block, not a Python step per byte or per check.
_TOKEN_CHARS = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_VALUE_CHARS = rb"[^\x00-\x08\x0a-\x1f\x7f]"  # no control but HTAB; obs-text (8-bit) allowed
_TOKEN = re.compile(_TOKEN_CHARS + rb"+")
_TARGET = re.compile(rb"[\x21-\x7e]+")  # visible ASCII: no space, control or 8-bit byte
_REQUEST_LINE = re.compile(b"(" + _TOKEN_CHARS + rb"+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
_FIELD_LINE = re.compile(_TOKEN_CHARS + b"+:" + _VALUE_CHARS + rb"*\r\n")
# One field line from its start: every line of a valid block matches, so the block is
# valid exactly when it has as many matches as CRLFs, and no LF outside them.
_FIELD = re.compile(b"^(" + _TOKEN_CHARS + rb"+):[ \t]*(" + _VALUE_CHARS + rb"*)\r\n", re.MULTILINE)
_FIELD_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;" + _VALUE_CHARS + rb"*)?[ \t]*")
_ABSOLUTE = re.compile(rb"https?://[^/?#]*", re.IGNORECASE)
_WHITESPACE = (b" ", b"\t")
# Headers a request may carry once: two copies are two readings of one request.
_SINGLE = frozenset({b"content-length", b"host", b"authorization", b"idempotency-key", b"transfer-encoding"})
# Headers that decide how the request is framed, or what follows it.
_FRAMING = _SINGLE | {b"connection", b"upgrade", b"expect"}


class Refused(Exception):
    """The request cannot be taken: answer ``status`` with ``detail``, then close."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason  # a short label from a fixed set: logs and metrics
        self.detail = detail


@dataclass(slots=True)
class Request:
    """One whole request, as the edge hands it to the app."""

    method: str
    target: bytes  # origin-form: the path and query, absolute-form reduced to them
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: tuple[tuple[bytes, bytes], ...]  # (lower-case name, value); `_` names dropped
    body: bytes
    chunked: bool
    keep_alive: bool  # False: the connection ends once this request is answered


def _malformed(what: str) -> Refused:
    return Refused(400, "malformed", f"the request is not valid HTTP/1.1 ({what}): check how the client frames it")


def _too_large(limit: int) -> Refused:
    return Refused(
        413, "body_too_large", f"the body is larger than RINGSUM_MAX_BODY ({limit} bytes): send less, or split a batch"
    )


def _headers_too_large() -> Refused:
    return Refused(
        431,
        "headers_too_large",
        f"the headers are larger than {MAX_HEADER_BYTES} bytes or {MAX_HEADERS} fields: send fewer",
    )


_URL_TOO_LONG = Refused(414, "url_too_long", f"the URL is longer than {MAX_URL_BYTES} bytes: shorten it")


class _Head:
    """What the head of the request being read said, until its body is whole."""

    __slots__ = ("chunked", "expects_continue", "headers", "keep_alive", "length", "method", "target", "version")

    def __init__(self, method: str, target: bytes, version: str) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers: tuple[tuple[bytes, bytes], ...] = ()
        self.length = 0
        self.chunked = False
        self.keep_alive = version == "HTTP/1.1"
        self.expects_continue = False


# A 400, not RFC 9112's 505: no input, however malformed, gets a 5xx (docs/api.md#errors).
_WRONG_VERSION = Refused(400, "version", "only HTTP/1.1 and HTTP/1.0 are served: send HTTP/1.1")


def _parse_request_line(line: bytes) -> _Head:
    parsed = _REQUEST_LINE.fullmatch(line)
    if parsed is None:
        raise _request_line_refusal(line)
    method, target, major, minor = parsed.groups()
    if major != b"1" or minor not in (b"0", b"1"):
        raise _WRONG_VERSION
    if len(target) > MAX_URL_BYTES:
        raise _URL_TOO_LONG
    if method == b"CONNECT":
        raise Refused(405, "connect", "CONNECT is not served: ringsum tunnels nothing")
    if b"#" in target:
        raise _malformed("the target has a fragment (#): leave it out or percent-encode it")
    if target[0] != 47:  # not "/": absolute-form is read for its path, as RFC 9112 3.2.2 says
        absolute = _ABSOLUTE.match(target)
        if absolute is not None:
            target = target[absolute.end() :]
            if not target.startswith(b"/"):
                target = b"/" + target
        elif not (target == b"*" and method == b"OPTIONS"):
            raise _malformed("the target must be a path starting with /")
    return _Head(method.decode("ascii"), target, "HTTP/1.1" if minor == b"1" else "HTTP/1.0")


def _request_line_refusal(line: bytes) -> Refused:
    """Say what is wrong with a request line the fast pattern did not take."""
    parts = line.split(b" ")
    if len(line) > MAX_URL_BYTES + 64:
        return _URL_TOO_LONG
    if len(parts) != 3:
        return _malformed("the request line must be METHOD SP target SP HTTP/1.1, one space apart")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        return _malformed("the method is not a token")
    if not _TARGET.fullmatch(target):
        return _malformed("the target must be visible ASCII: percent-encode the rest")
    if re.fullmatch(rb"HTTP/[0-9]\.[0-9]", version):
        return _WRONG_VERSION
    return _malformed("the protocol must be HTTP/1.1 or HTTP/1.0")


@dataclass(frozen=True, slots=True)
class _Fields:
    """What a block of header fields says, whatever request line it follows."""

    headers: tuple[tuple[bytes, bytes], ...]  # (lower-case name, value); `_` names dropped
    length: int
    chunked: bool
    has_length: bool
    has_host: bool
    close: bool  # Connection: close, or an Upgrade: the connection ends after this request
    keep_alive: bool  # Connection: keep-alive (what an HTTP/1.0 client must say)
    expects_continue: bool


# Parsed header blocks by their bytes: a client sends the same block again and again
# (its Host, User-Agent, Content-Type, token), so most requests skip the parse. Bounded:
# small blocks only, and emptied when full.
_PARSED: dict[bytes, _Fields] = {}
_PARSED_MAX = 512
_PARSED_BLOCK_MAX = 1024


def _parse_fields(head: _Head, fields: bytes, max_body: int) -> None:
    """Read the header fields (each line with its CRLF) into ``head``."""
    parsed = _PARSED.get(fields)
    if parsed is None:
        parsed = _read_fields(fields)
        if len(fields) <= _PARSED_BLOCK_MAX:
            if len(_PARSED) >= _PARSED_MAX:
                _PARSED.clear()
            _PARSED[fields] = parsed
    head.headers = parsed.headers
    head.length = parsed.length
    head.chunked = parsed.chunked
    head.expects_continue = parsed.expects_continue
    if head.version == "HTTP/1.0":
        if parsed.chunked:
            raise _malformed("HTTP/1.0 has no chunked bodies: send Content-Length")
        head.keep_alive = parsed.keep_alive
        head.expects_continue = False  # an HTTP/1.0 client knows no 1xx answer
    elif not parsed.has_host:
        raise Refused(400, "missing_host", "an HTTP/1.1 request must carry a Host header")
    if parsed.close:
        head.keep_alive = False  # nothing after an Upgrade is ever read: no protocol is switched
    if head.length > max_body:
        raise _too_large(max_body)  # refused before a byte of the body is read


def _read_fields(fields: bytes) -> _Fields:
    pairs = _FIELD.findall(fields)
    lines = fields.count(b"\r\n")
    if len(pairs) != lines or fields.count(b"\n") != lines:
        raise _field_refusal(fields)
    if lines > MAX_HEADERS:
        raise _headers_too_large()
    headers = []
    seen: set[bytes] = set()
    length = 0
    chunked = close = keep_alive = expects_continue = False
    for name, value in pairs:
        if value[-1:] in _WHITESPACE:
            value = value.rstrip(b" \t")
        if b"_" in name:
            continue  # never read as its dashed twin (Idempotency_Key is not Idempotency-Key)
        name = name.lower()
        if name in _FRAMING:
            if name in _SINGLE:
                if name in seen:
                    raise Refused(400, "duplicate_header", f"the {name.decode()} header is sent twice: send it once")
                seen.add(name)
            if name == b"content-length":
                if not _DIGITS.fullmatch(value):
                    raise _malformed("Content-Length is not a number")
                length = int(value)
            elif name == b"transfer-encoding":
                if value.lower() != b"chunked":
                    raise Refused(
                        400,
                        "transfer_coding",
                        "Transfer-Encoding must be chunked (no other coding is taken): send it plain",
                    )
                chunked = True
            elif name == b"connection":
                tokens = {token.strip(b" \t") for token in value.lower().split(b",")}
                close |= b"close" in tokens
                keep_alive |= b"keep-alive" in tokens
            elif name == b"upgrade":
                close = True
            elif name == b"expect":
                expects_continue = value.lower() == b"100-continue"
        headers.append((name, value))
    if chunked and b"content-length" in seen:
        raise Refused(
            400,
            "ambiguous_framing",
            "Content-Length and Transfer-Encoding together are ambiguous (RFC 9112 section 6.3): send only one",
        )
    return _Fields(
        tuple(headers),
        length,
        chunked,
        b"content-length" in seen,
        b"host" in seen,
        close,
        keep_alive,
        expects_continue and (chunked or length > 0),
    )


def _field_refusal(fields: bytes) -> Refused:
    """Say which field line the fast pattern did not take, and why."""
    for line in fields.split(b"\r\n")[:-1]:
        if _FIELD_LINE.fullmatch(line + b"\r\n"):
            continue
        if line[:1] in (b" ", b"\t"):
            return _malformed("a header line is folded (obs-fold): send each header on one line")
        name, colon, _ = line.partition(b":")
        if colon and _TOKEN.fullmatch(name):
            return _malformed("a header value holds a control character or a bare CR or LF")
        return _malformed("a header line is not NAME: value, with no space before the colon")
    return _malformed("a line ends in a bare CR or LF: end every line with CRLF")


class RequestReader:
    """Feed it bytes; take whole requests from it, in order, one at a time.

    It holds the bytes not yet framed, plus the decoded body of a chunked request being
    read; ``held`` says how many, so the edge can bound what all connections hold.
    """

    __slots__ = (
        "_body",
        "_buffer",
        "_chunk_left",
        "_chunks",
        "_framing",
        "_head",
        "_max_body",
        "_state",
        "ended",
        "wants_turn",
    )

    def __init__(self, max_body: int) -> None:
        self._max_body = max_body
        self._buffer = bytearray()
        self._head: _Head | None = None
        self._body = bytearray()  # a chunked body, decoded so far
        self._state = "size"  # chunked: "size", "data", "data-end", "trailers"
        self._chunk_left = 0
        self._chunks = 0
        self._framing = 0
        self.ended = False  # a request that ends the connection was read: ignore the rest
        self.wants_turn = False  # bytes held can frame more: the last call stopped to be fair

    @property
    def held(self) -> int:
        return len(self._buffer) + len(self._body)

    @property
    def mid_request(self) -> bool:
        """Bytes of a request that is not complete yet (or not framed yet) are held."""
        return bool(self._buffer) or self._head is not None

    @property
    def reading_body(self) -> bool:
        """The head of the request being read is whole: only its body is still arriving."""
        return self._head is not None

    def take_continue(self) -> bool:
        """True, once, when the head just read asked for ``100 Continue`` and none of
        its body has arrived: the client waits for that answer before sending it."""
        head = self._head
        if head is None or not head.expects_continue:
            return False
        head.expects_continue = False
        return not self._buffer

    def feed(self, data: bytes) -> None:
        if not self.ended:
            self._buffer += data

    def next_request(self) -> Request | None:
        """The next whole request, or None until more bytes arrive; :class:`Refused`
        when the bytes cannot be one."""
        self.wants_turn = False
        if self.ended:
            return None
        head = self._head
        if head is None:
            if not self._buffer:
                return None
            head = self._head = self._read_head()
            if head is None:
                return None
        body = self._read_chunked() if head.chunked else self._read_sized(head.length)
        if body is None:
            return None
        self._head = None
        if not head.keep_alive:
            self.ended = True
            self._buffer.clear()
        return Request(head.method, head.target, head.version, head.headers, body, head.chunked, head.keep_alive)

    # -- the head -------------------------------------------------------------------

    def _read_head(self) -> _Head | None:
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")  # an empty line before a request line is refused, as h11 does
        if end < 0:
            self._refuse_unfinished_head()
            return None
        line_end = buffer.find(b"\r\n")
        request_line = bytes(buffer[:line_end])
        fields = bytes(buffer[line_end + 2 : end + 2])  # every field line with its CRLF
        del buffer[: end + 4]
        head = _parse_request_line(request_line)
        if len(fields) > MAX_HEADER_BYTES:
            raise _headers_too_large()
        _parse_fields(head, fields, self._max_body)
        return head

    def _refuse_unfinished_head(self) -> None:
        """Refuse a head before it is whole once it cannot be taken any more: too long,
        or bare line feeds that would never be followed by CRLF CRLF."""
        buffer = self._buffer
        if len(buffer) > MAX_URL_BYTES + 64 and buffer.find(b"\r\n") < 0:
            raise _URL_TOO_LONG
        if len(buffer) > MAX_URL_BYTES + MAX_HEADER_BYTES + 64:
            raise _headers_too_large()
        if b"\n\n" in buffer or b"\n\r\n" in buffer:
            raise _malformed("a line ends in a bare LF: end every line with CRLF")

    # -- the body -------------------------------------------------------------------

    def _read_sized(self, length: int) -> bytes | None:
        buffer = self._buffer
        if len(buffer) < length:
            return None
        body = bytes(buffer[:length])
        del buffer[:length]
        return body

    def _read_chunked(self) -> bytes | None:
        """Decode what has arrived of a chunked body; the body once the last chunk and
        its trailers (read, never merged into the headers) are in. At most
        CHUNKS_PER_TURN chunks a call: ``wants_turn`` then says more can be read
        without waiting for the client."""
        buffer = self._buffer
        body = self._body
        pos = 0
        try:
            for _ in range(CHUNKS_PER_TURN):
                if self._state == "size":
                    after = self._read_chunk_size(pos)
                    if after is None:
                        return None
                    pos = after
                elif self._state == "data":
                    left = self._chunk_left
                    if len(buffer) - pos < left + 2:
                        return None  # the chunk and its CRLF, whole, before it is copied
                    if buffer[pos + left : pos + left + 2] != b"\r\n":
                        raise _malformed("a chunk is longer than its size line says")
                    body += buffer[pos : pos + left]
                    pos += left + 2
                    self._state = "size"
                else:
                    after = self._skip_trailers(pos)
                    if after is None:
                        return None
                    pos = after
                    whole = bytes(body)
                    self._body = bytearray()
                    self._state = "size"
                    self._chunks = self._framing = 0
                    return whole
            self.wants_turn = True
            return None
        finally:
            del buffer[:pos]

    def _read_chunk_size(self, start: int) -> int | None:
        """Read the chunk-size line at ``start``: the offset after it, or None until it is whole."""
        buffer = self._buffer
        end = buffer.find(b"\r\n", start, start + MAX_CHUNK_LINE + 2)
        if end < 0:
            if len(buffer) - start > MAX_CHUNK_LINE:
                raise _malformed(f"a chunk-size line is longer than {MAX_CHUNK_LINE} bytes")
            if buffer.find(b"\n", start) >= 0:
                raise _malformed("a chunk-size line ends in a bare LF")
            return None
        sized = _CHUNK_LINE.fullmatch(buffer, start, end)
        if sized is None:
            raise _malformed("a chunk size is not hexadecimal digits")
        size = int(sized.group(1), 16)
        self._chunks += 1
        self._framing += end + 4 - start
        if self._chunks > MAX_CHUNKS or self._framing > MAX_CHUNK_FRAMING:
            raise Refused(
                400, "chunks", f"the body came in more than {MAX_CHUNKS} chunks or framing bytes: send larger chunks"
            )
        if len(self._body) + size > self._max_body:
            raise _too_large(self._max_body)
        self._chunk_left = size
        self._state = "data" if size else "trailers"
        return end + 2

    def _skip_trailers(self, start: int) -> int | None:
        """Read the trailer section at ``start`` (lines up to an empty one) and drop it:
        a field sent after the body never counts as a header. The offset after it, or
        None until it is whole."""
        buffer = self._buffer
        if len(buffer) - start < 2:
            return None
        if buffer[start : start + 2] == b"\r\n":
            return start + 2
        end = buffer.find(b"\r\n\r\n", start)
        if end < 0:
            if len(buffer) - start > MAX_HEADER_BYTES:
                raise _headers_too_large()
            if b"\n\n" in buffer[start:]:
                raise _malformed("a trailer line ends in a bare LF")
            return None
        raw = bytes(buffer[start:end])
        if raw.count(b"\n") != raw.count(b"\r\n") or raw.count(b"\r") != raw.count(b"\n"):
            raise _malformed("a trailer line ends in a bare CR or LF: end every line with CRLF")
        for line in raw.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name) or _FIELD_VALUE_BAD.search(value.strip(b" \t")):
                raise _malformed("a trailer line is not NAME: value")
        return end + 4
