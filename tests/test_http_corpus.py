"""The differential framing corpus (issue 21, docs/api.md#http-framing,
"Nothing is upgraded or tunnelled"): every byte stream in tests/http_corpus/ is framed by the edge and by h11
(tests/http_oracle.py), and the edge may refuse sooner than h11 but never run a request
h11 would not frame the same way. Each case is sent whole and split in two at every
byte of its head and at random points of its body, so a parser that frames differently
when a request arrives in pieces is caught too. Then every case goes to a real
``python app.py`` on raw sockets, where no request to a ``smuggled`` key may record.

The corpus format is described in tests/http_corpus/README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
import requests
from http_oracle import Framed, Framing, frame
from serving import Server, serving

from ringsum.http.edge import Connection, Edge, EdgeLimits

CORPUS = Path(__file__).resolve().parent / "http_corpus"
WHOLE_BODY = "ringsum.whole_body"
MAX_BODY = 1024 * 1024
HEAD_SPLITS = 200  # every byte boundary of a head up to this long
RANDOM_SPLITS = 20  # points past the head, when the stream is longer than its head
LOOP_TURNS = 200  # enough for the longest pipeline of the corpus at one request a turn
SMUGGLED = "smuggled"  # keys of requests no server may run
CANARY = "canary"  # a key recorded before the cases run, that only a hidden DELETE removes
# Headers docs/api.md#http-framing wants single: a request carrying one twice is refused, never run.
SINGLE_HEADERS = (b"host", b"authorization", b"idempotency-key")


# -- the corpus ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    comments: tuple[str, ...]
    data: bytes
    expect_all: bool = False  # the edge must run every request h11 frames
    at_least: int = 0  # the edge must run at least this many
    at_most: int | None = None  # docs/api.md#http-framing is stricter than h11: the edge runs at most this many


_ESCAPES = {"r": b"\r", "n": b"\n", "t": b"\t", "\\": b"\\"}
_UNIT = re.compile(r"\\x([0-9A-Fa-f]{2})|\\([rnt\\])|([\x21-\x5b\x5d-\x7e ])")
_REPEAT = re.compile(r"\\\{([0-9]+)\}")


def parse_payload(text: str, where: str) -> bytes:
    """The bytes that the payload lines of a case file write (README.md: escapes, and
    real newlines ignored)."""
    out = bytearray()
    for number, line in enumerate(text.split("\n"), 1):
        if line != line.rstrip(" \t"):
            raise ValueError(f"{where}:{number}: trailing whitespace is invisible: write it as \\x20 or \\t")
        pos = 0
        while pos < len(line):
            times = 1
            repeat = _REPEAT.match(line, pos)
            if repeat is not None:
                times, pos = int(repeat.group(1)), repeat.end()
            unit = _UNIT.match(line, pos)
            if unit is None:
                raise ValueError(f"{where}:{number}: cannot read {line[pos : pos + 10]!r} (see README.md)")
            hex_byte, escape, literal = unit.groups()
            if hex_byte is not None:
                piece = bytes([int(hex_byte, 16)])
            elif escape is not None:
                piece = _ESCAPES[escape]
            else:
                piece = literal.encode("ascii")
            out += piece * times
            pos = unit.end()
    return bytes(out)


def load_case(path: Path) -> Case:
    comments: list[str] = []
    lines = path.read_text(encoding="ascii").split("\n")
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        if lines[0].startswith("#"):
            comments.append(lines[0].lstrip("#").strip())
        lines.pop(0)
    expect_all, at_least, at_most = False, 0, None
    for comment in comments:
        if comment.startswith("expect:"):
            expected = comment.removeprefix("expect:").strip()
            bound = re.fullmatch(r"(at-most|at-least|exactly) ([0-9]+)", expected)
            if expected == "all":
                expect_all = True
            elif bound is None:
                raise ValueError(f"{path.name}: unknown expectation {expected!r} (see README.md)")
            else:
                count = int(bound.group(2))
                at_least = count if bound.group(1) != "at-most" else at_least
                at_most = count if bound.group(1) != "at-least" else at_most
    data = parse_payload("\n".join(lines), path.name)
    if not data:
        raise ValueError(f"{path.name}: no bytes to send")
    return Case(path.stem, tuple(comments), data, expect_all, at_least, at_most)


def load_corpus() -> list[Case]:
    return [load_case(path) for path in sorted(CORPUS.glob("*.http"))]


CASES = load_corpus()


def split_points(case: Case) -> list[int]:
    """Where the stream is cut in two: every boundary of its head (up to and with the
    first CRLF CRLF, at most HEAD_SPLITS bytes), then RANDOM_SPLITS points past it."""
    data = case.data
    end = data.find(b"\r\n\r\n")
    head = min(HEAD_SPLITS, len(data) if end < 0 else end + 4)
    points = list(range(1, min(head + 1, len(data))))
    rest = list(range(head + 1, len(data)))
    if len(rest) > RANDOM_SPLITS:
        rest = sorted(random.Random(case.name).sample(rest, RANDOM_SPLITS))
    return points + rest


# -- driving the edge in process -----------------------------------------------------------


class FakeTransport:
    """What the edge's Connection needs of an asyncio transport; records what it writes."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.late = bytearray()  # written after close(): a real transport may drop it or send it
        self.closed = False
        self.reading_paused = False

    def write(self, data: bytes) -> None:
        (self.late if self.closed else self.written).extend(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    def is_reading(self) -> bool:
        return not self.reading_paused and not self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass


_CONTENT_KEYS = ("CONTENT_TYPE", "CONTENT_LENGTH")


@dataclass(frozen=True)
class Ran:
    """A request as the app saw it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # HTTP_*, CONTENT_TYPE and CONTENT_LENGTH
    body: bytes


class RecordingApp:
    """A WSGI app that records each request and answers it with an empty 200 carrying
    its index, so the edge's answers can be told from its refusals."""

    def __init__(self) -> None:
        self.ran: list[Ran] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ.get(WHOLE_BODY)
        if body is None:
            body = environ["wsgi.input"].read()
        headers = {key: value for key, value in environ.items() if key.startswith("HTTP_") or key in _CONTENT_KEYS}
        self.ran.append(
            Ran(environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("QUERY_STRING", ""), headers, body)
        )
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Recorded", str(len(self.ran) - 1))])
        return [b""]


@dataclass
class Outcome:
    ran: list[Ran]
    written: bytes
    closed: bool
    late: bytes = b""  # written after the edge closed the transport
    crash: str = ""  # the edge raised, or stopped reading for good


async def settle() -> None:
    """Let the loop run what the edge scheduled: up to LOOP_TURNS turns, fewer once
    nothing is ready to run (no callback queued, no timer due): later turns would
    find nothing to do, and 36,000 runs a test make every turn count."""
    loop = asyncio.get_running_loop()
    for _ in range(LOOP_TURNS):
        await asyncio.sleep(0)
        scheduled = loop._scheduled  # type: ignore[attr-defined]
        if not loop._ready and not (scheduled and scheduled[0].when() <= loop.time()):  # type: ignore[attr-defined]
            return


async def drive(edge: Edge, app: RecordingApp, chunks: list[bytes]) -> Outcome:
    """Feed ``chunks`` to a fresh connection of ``edge`` as a socket would, let the loop
    run what the edge scheduled, and say what the app ran and the client got."""
    app.ran = []
    transport = FakeTransport()
    connection = Connection(edge)
    crash = ""
    try:
        connection.connection_made(transport)  # type: ignore[arg-type]
        for chunk in chunks:
            if transport.closed:
                break
            turns = 0
            while transport.reading_paused and not transport.closed and turns < 10 * LOOP_TURNS:
                await asyncio.sleep(0)  # a paused socket delivers nothing until resumed
                turns += 1
            if transport.closed:
                break
            if transport.reading_paused:
                crash = "the edge paused reading and never resumed, with bytes of the client still to read"
                break
            connection.data_received(chunk)
        await settle()
    except Exception:
        crash = traceback.format_exc(limit=-3)
    closed = transport.closed
    try:
        connection.connection_lost(None)
    except Exception:
        crash = crash or traceback.format_exc(limit=-3)
    return Outcome(list(app.ran), bytes(transport.written), closed, bytes(transport.late), crash)


# -- judging one run against the oracle ----------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)

    def closes(self) -> bool:
        return "close" in (self.header("connection") or "").lower()


def parse_answers(written: bytes) -> tuple[list[Answer], bytes]:
    """The HTTP answers the edge wrote, and whatever bytes after them are not one."""
    answers: list[Answer] = []
    rest = written
    while rest:
        end = rest.find(b"\r\n\r\n")
        if end < 0:
            break
        status_line, *lines = rest[:end].decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            break
        headers = [(name.strip().lower(), value.strip()) for name, _, value in (line.partition(":") for line in lines)]
        answer = Answer(int(parts[1]), headers)
        length = answer.header("content-length")
        if answer.status < 200 or answer.status in (204, 304):
            size = 0
        elif length is not None and length.isdigit():
            size = int(length)
        else:
            break  # an answer without a length cannot be told from what follows it
        if len(rest) < end + 4 + size:
            break
        answers.append(answer)
        rest = rest[end + 4 + size :]
    return answers, rest


_ABSOLUTE = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")


def expected_paths(target: bytes) -> tuple[set[str], set[str]]:
    """The PATH_INFO and QUERY_STRING a request to ``target`` may show: absolute-form
    reduced to its path and query; a fragment cut or kept (no server reads it)."""
    absolute = _ABSOLUTE.match(target)
    if absolute is not None:
        target = target[absolute.end() :]
        if not target.startswith(b"/"):
            target = b"/" + target
    paths, queries = set(), set()
    for form in {target, target.partition(b"#")[0]}:
        path, _, query = form.partition(b"?")
        paths.add(unquote_to_bytes(path).decode("latin-1"))
        queries.add(query.decode("latin-1"))
    return paths, queries


def environ_key(name: bytes) -> str | None:
    """The environ key a header h11 saw may show as: none for a name with ``_``
    (dropped, never merged into a dashed name)."""
    if b"_" in name:
        return None
    key = name.decode("latin-1").upper().replace("-", "_")
    return key if key in _CONTENT_KEYS else "HTTP_" + key


def compare(ran: Ran, framed: Framed) -> list[str]:
    """How the request the app ran differs from the one h11 framed."""
    problems = []
    if ran.method != framed.method.decode("latin-1"):
        problems.append(f"method {ran.method!r}, h11 {framed.method!r}")
    paths, queries = expected_paths(framed.target)
    if ran.path not in paths or ran.query not in queries:
        problems.append(f"path {ran.path!r} query {ran.query!r}, h11 target {framed.target!r}")
    if ran.body != framed.body:
        problems.append(f"body {ran.body!r}, h11 {framed.body!r}")
    sent: dict[str, list[str]] = {}
    for name, value in framed.headers:
        key = environ_key(name)
        if key is not None:
            sent.setdefault(key, []).append(value.decode("latin-1"))
    for key, value in ran.headers.items():
        if key == "CONTENT_LENGTH":
            if value != str(len(ran.body)):
                problems.append(f"CONTENT_LENGTH {value!r} but the body is {len(ran.body)} bytes")
            continue
        values = sent.get(key)
        if values is None:
            problems.append(f"{key}={value!r}, but h11 saw no such header (a trailer? a `_` name?)")
        elif value not in ({values[0]} if len(values) == 1 else {",".join(values), ", ".join(values)}):
            problems.append(f"{key}={value!r}, h11 {values!r}")
    for name in SINGLE_HEADERS:
        if len(framed.values(name)) > 1:
            problems.append(f"ran with {name.decode()} sent twice (docs/api.md#http-framing: a 400)")
    return problems


def show(request: Ran | Framed) -> str:
    if isinstance(request, Framed):
        return f"{request.method.decode('latin-1')} {request.target.decode('latin-1')} body={request.body[:60]!r}"
    query = f"?{request.query}" if request.query else ""
    return f"{request.method} {request.path}{query} body={request.body[:60]!r}"


def judge(case: Case, framing: Framing, outcome: Outcome) -> list[str]:
    """Every way the edge's run breaks the oracle rule (empty: it holds)."""
    problems = [f"the edge crashed: {outcome.crash}"] if outcome.crash else []
    if outcome.late:
        problems.append(f"the edge wrote after closing the connection: {outcome.late[:80]!r}")
    framed, ran = framing.requests, outcome.ran
    allowed = framed if case.at_most is None else framed[: case.at_most]
    stop = f"h11: {framing.end}" + (f" ({framing.reason})" if framing.reason else "")
    if len(ran) > len(allowed):
        why = stop if len(allowed) == len(framed) else f"at most {case.at_most} by its `# expect:` (stricter than h11)"
        problems.append(f"the app ran {len(ran)} requests where at most {len(allowed)} may run; {why}")
    for index, (got, wanted) in enumerate(zip(ran, framed, strict=False)):
        problems += [f"request {index}: {problem}" for problem in compare(got, wanted)]
    if case.expect_all and len(ran) != len(framed):
        problems.append(f"expect: all, but the app ran {len(ran)} of the {len(framed)} requests h11 frames")
    if len(ran) < case.at_least:
        problems.append(f"the app ran {len(ran)} requests; at least {case.at_least} must run")
    problems += judge_answers(framing, outcome)
    if problems:
        problems.append(f"h11 frames {len(framed)}, {stop}: " + "; ".join(show(request) for request in framed))
        problems.append(f"the app ran {len(ran)}: " + "; ".join(show(request) for request in ran))
        problems.append(f"the edge wrote {outcome.written[:600]!r}, closed={outcome.closed}")
    return problems


def judge_answers(framing: Framing, outcome: Outcome) -> list[str]:
    """The edge answers what the app ran in order, then at most one refusal (4xx/5xx,
    ``Connection: close``, and the connection closed). Where it ran less than h11
    frames it refused; where h11 pauses or closes, the connection is closed. Where h11
    errs after all it frames, the edge may refuse, or wait for bytes it finds missing."""
    answers, junk = parse_answers(outcome.written)
    problems = [f"the edge wrote bytes that are not an HTTP answer: {junk[:80]!r}"] if junk else []
    interim = [answer for answer in answers if answer.status < 200]
    finals = [answer for answer in answers if answer.status >= 200]
    ran = len(outcome.ran)
    recorded = [answer.header("x-recorded") for answer in finals[:ran]]
    if recorded != [str(index) for index in range(ran)]:
        problems.append(f"the app's answers are not the first answers, in order: {recorded}")
    after = finals[ran:]
    if len(after) > 1:
        problems.append(f"{len(after)} answers after the app's: {[answer.status for answer in after]}")
    refusal = after[0] if after else None
    if refusal is not None:
        if refusal.status < 400 or not refusal.closes():
            problems.append(f"the refusal is a {refusal.status} with Connection: {refusal.header('connection')}")
        if not outcome.closed:
            problems.append(f"the edge refused ({refusal.status}) but left the connection open")
    if len(interim) > framing.continues or any(answer.status != 100 for answer in interim):
        statuses = [answer.status for answer in interim]
        problems.append(f"interim answers {statuses}, to {framing.continues} HTTP/1.1 heads that expect 100-continue")
    last_closes = 0 < ran <= len(finals) and finals[ran - 1].closes()
    framed = len(framing.requests)
    short = ran < framed  # the edge refused sooner than h11
    if short and refusal is None and not last_closes:
        problems.append(f"the edge ran {ran} of the {framed} requests h11 frames and answered no refusal for the rest")
    if (short or framing.end in ("paused", "close")) and not outcome.closed:
        problems.append(f"the connection is still open, but no request may be read after these ({framing.end})")
    if outcome.closed and refusal is None and not last_closes and not short and framing.end == "idle":
        problems.append("the edge closed the connection with no answer saying so")
    return problems


async def run_case(case: Case) -> list[str]:
    """Judge the case whole and at every split point; the problems of the first failing
    run, and at which other split points it fails too."""
    app = RecordingApp()
    edge = Edge(app, EdgeLimits(max_body=MAX_BODY, read_timeout_s=10.0, idle_timeout_s=30.0))
    failures: list[tuple[str, list[str]]] = []
    for point in [None, *split_points(case)]:
        chunks = [case.data] if point is None else [case.data[:point], case.data[point:]]
        problems = judge(case, frame(chunks), await drive(edge, app, chunks))
        if problems:
            failures.append(("sent whole" if point is None else f"split at byte {point}", problems))
    if not failures:
        return []
    where, problems = failures[0]
    report = [f"{case.name}, {where}:", *(f"  {problem}" for problem in problems)]
    if len(failures) > 1:
        others = ", ".join(where.removeprefix("split at byte ") for where, _ in failures[1:40])
        report.append(f"  it fails at {len(failures) - 1} more split points too: {others}")
    return report


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_the_edge_frames_no_request_h11_would_not(case: Case) -> None:
    report = asyncio.run(run_case(case))
    assert not report, "\n" + "\n".join(report)


def test_the_case_format_writes_every_byte_and_ignores_real_newlines() -> None:
    """README.md's format: a misread escape would test another stream than the one written."""
    assert parse_payload("GET / HTTP/1.1\\r\\n\nHost: x\\r\\n\n\\r\\n", "t") == b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert parse_payload("a\\t\\x00\\\\\\{3}b\\{2}\\x20c", "t") == b"a\t\x00\\bbb  c"
    with pytest.raises(ValueError, match="trailing whitespace"):
        parse_payload("Host: x ", "t")
    with pytest.raises(ValueError, match="cannot read"):
        parse_payload("caf\u00e9", "t")


def test_the_oracle_stops_where_a_server_must_and_allows_what_rfc_9112_allows() -> None:
    """The oracle's own rules (tests/http_oracle.py), since every case trusts them."""
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    upgrade = b"POST /m HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\nabc"
    paused = frame([upgrade + get])
    assert (paused.end, [request.body for request in paused.requests]) == ("paused", [b"abc"])
    closing = frame([b"GET / HTTP/1.0\r\n\r\n" + get])
    assert (closing.end, len(closing.requests)) == ("close", 1)
    kept = frame([b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\r\n" + get])
    assert (kept.end, len(kept.requests)) == ("idle", 2)
    for point in range(1, len(get) * 2 + 4):
        stream = get + b"\r\n" + get
        assert len(frame([stream[:point], stream[point:]]).requests) == 2, point
    assert frame([get + b"GET"]).end == "incomplete"
    assert frame([b"GET / HTTP/1.1\r\n\r\n"]).end == "error"  # no Host
    trailers = frame([b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: b\r\n\r\n"])
    assert (trailers.requests[0].values(b"a"), trailers.requests[0].trailers) == ([], ((b"a", b"b"),))


def test_the_corpus_is_large_and_every_smuggled_key_is_one_no_server_may_run() -> None:
    """The real-server test below relies on it: a request to a ``smuggled`` key, or one
    deleting the canary, is one h11 does not frame (or docs/api.md#http-framing refuses the stream first)."""
    assert len(CASES) >= 200
    assert sum(case.expect_all for case in CASES) >= 40
    for case in CASES:
        framing = frame([case.data])
        allowed = framing.requests if case.at_most is None else framing.requests[: case.at_most]
        for request in allowed:
            assert SMUGGLED.encode() not in request.target, (case.name, request)
            assert not (request.method == b"DELETE" and CANARY.encode() in request.target), (case.name, request)
        assert len(framing.requests) >= case.at_least, case.name
        assert framing.requests or not case.expect_all, case.name


# -- every case against a real server ---------------------------------------------------------


def send_raw(port: int, data: bytes, timeout: float = 8.0) -> bytes:
    """Send ``data`` on a fresh connection, end the sending side, and read until the
    server closes (or ``timeout``)."""
    received = b""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the server may refuse and close before all is sent
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
    return received


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serving({"RINGSUM_READ_TIMEOUT": "2s", "RINGSUM_IDLE_TIMEOUT": "2s"}) as started:
        yield started


@pytest.mark.process
def test_a_real_server_runs_no_smuggled_request_of_the_corpus(server: Server) -> None:
    assert requests.post(f"{server.url}/metric/{CANARY}", data="value=1", timeout=10).status_code == 200
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda case: send_raw(server.port, case.data), CASES))
    listing = requests.get(f"{server.url}/metric", params={"prefix": SMUGGLED, "limit": 10_000}, timeout=10)
    assert listing.status_code == 200, listing.text
    recorded = {metric["key"]: metric["value"] for metric in listing.json()["metrics"] if metric["value"]}
    assert not recorded, f"hidden requests ran and recorded: {recorded}"
    deleters = [case.name for case in CASES if b"DELETE /metric/" + CANARY.encode() in case.data]
    assert server.total(CANARY) == 1, f"a hidden DELETE ran; one of {deleters}"
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
