"""The edge against a hostile client (docs/api.md#http-framing, docs/api.md#running;
docs/edge.md's threat model), on a real
``python app.py`` over raw sockets: nothing smuggled, memory bounded per connection and
per process, no client holds the others, every refusal logged and counted.

Bounds here are generous (a shared 2-core CI machine); `make bench` (the hostile step)
measures the real figures."""

from __future__ import annotations

import contextlib
import re
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from raw_http import assert_problem, connect, exchange, held_sockets, latencies, read_until_closed, status_and_body
from serving import Server, serving

pytestmark = pytest.mark.process

HIDDEN = b"POST /metric/smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\nvalue=9"
MIB = 1024 * 1024


def answers_in(data: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


def send_in_two_reads(server: Server, head: bytes, body: bytes) -> bytes:
    """``head``, then ``body`` in a later TCP read (the timing that smuggled a request)."""
    with connect(server) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(head)
        time.sleep(0.05)
        with contextlib.suppress(OSError):
            sock.sendall(body)
        return read_until_closed(sock, timeout=5)


@contextlib.contextmanager
def attacking(attack: Callable[[threading.Event], None], clients: int = 1) -> Iterator[None]:
    """``clients`` threads running ``attack(stop)`` for the ``with`` block."""
    stop = threading.Event()
    threads = [threading.Thread(target=attack, args=(stop,), daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)


def assert_responsive(taken: list[float]) -> None:
    assert statistics.median(taken) < 0.05, taken
    assert max(taken) < 1.0, taken


def wait_for_rss(server: Server, ceiling: int, timeout: float = 10.0) -> int:
    """The worker's RSS once it is at most ``ceiling`` (or what it is at ``timeout``)."""
    deadline = time.monotonic() + timeout
    while (rss := server.worker_rss_bytes()) > ceiling and time.monotonic() < deadline:
        time.sleep(0.1)
    return rss


# -- row 1: nothing upgraded or tunnelled ------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"POST /metric/outer HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: %d\r\n\r\n",
        b"GET /metric/outer/sum HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: %d\r\n\r\n",
        b"POST /metric/outer HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nContent-Length: %d\r\n\r\n",
        b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\nContent-Length: %d\r\n\r\n",
    ],
    ids=["upgrade-h2c", "upgrade-websocket", "upgrade-without-connection", "connect"],
)
def test_a_request_hidden_behind_an_upgrade_or_connect_never_runs(head: bytes) -> None:
    with serving() as server:
        for _ in range(3):  # body in a later read, and in the same one
            answer = send_in_two_reads(server, head % len(HIDDEN), HIDDEN)
            assert len(answers_in(answer)) == 1, answer  # one answer, then the connection ends
            assert b"Connection: close" in answer
            answer = exchange(server, head % len(HIDDEN) + HIDDEN)
            assert len(answers_in(answer)) == 1, answer
        assert server.total("smuggled") == 0
        if head.startswith(b"CONNECT"):
            assert_problem(answer, 405, "CONNECT")


def test_curl_asking_for_h2c_is_answered_in_http_1_1() -> None:
    """`curl --http2` offers an upgrade to h2c; the offer is declined and its body read as a body."""
    with serving() as server:
        done = subprocess.run(
            ["curl", "-sS", "--http2", "-X", "POST", f"{server.url}/metric/h2c", "-d", '{"value": 5}'],
            capture_output=True,
            timeout=30,
        )
        assert done.returncode == 0 and done.stdout == b"{}", done
        assert server.total("h2c") == 5


# -- rows 7, 8, 11, 12, 13: framing as RFC 9112 and nginx read it ----------------------------


def test_trailers_are_never_merged_into_headers() -> None:
    chunked = (
        b"POST /metric/trailed HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"7\r\nvalue=4\r\n0\r\n"
    )
    with serving({"RINGSUM_API_TOKEN": "secret"}) as server:
        answer = exchange(server, chunked + b"Authorization: Bearer secret\r\n\r\n")
        assert_problem(answer, 401, "token")  # a token sent as a trailer authenticates nothing
        token = b"Authorization: Bearer secret\r\n"
        keyed = chunked.replace(b"Host: x\r\n", b"Host: x\r\n" + token) + b"Idempotency-Key: once\r\n\r\n"
        for _ in range(2):  # the key is a trailer: no idempotency, both count
            assert status_and_body(exchange(server, keyed))[0] == 200
        answer = requests.get(f"{server.url}/metric/trailed/sum", headers={"Authorization": "Bearer secret"}, timeout=5)
        assert answer.json() == {"value": 8}


@pytest.mark.parametrize(
    "after, second",
    [
        (b"GARBAGE\r\n\r\n", 400),
        (
            b"POST /metric/next HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"POST /metric/next HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413),
    ],
    ids=["garbage", "cl-and-te", "over-limit"],
)
def test_a_valid_request_followed_by_a_bad_one_is_answered_then_the_bad_one_refused(after: bytes, second: int) -> None:
    with serving() as server:
        answer = exchange(server, b"POST /metric/first HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\nvalue=2" + after)
        assert answers_in(answer) == [200, second], answer
        assert server.total("first") == 2 and server.total("next") == 0


@pytest.mark.parametrize(
    "first",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /healthz HTTP/1.0\r\n\r\n",
    ],
    ids=["connection-close", "http-1.0"],
)
def test_nothing_after_the_last_request_of_a_connection_is_read(first: bytes) -> None:
    with serving() as server:
        assert answers_in(exchange(server, first + HIDDEN)) == [200]
        assert server.total("smuggled") == 0


@pytest.mark.parametrize(
    "request_bytes, status, word",
    [
        (b"GET /healthz HTTP/1.1\r\n\r\n", 400, "Host"),
        (b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "host"),
        (b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 400, "HTTP/1.1"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "HTTP/1.1"),
        (
            b"POST /metric/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n1",
            400,
            "content-length",
        ),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400, "folded"),
        (b"GET /healthz HTTP/1.1\nHost: x\n\n", 400, "CRLF"),
        (
            b"POST /metric/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;" + b"e" * 2000 + b"\r\n",
            400,
            "chunk",
        ),
    ],
    ids=["no-host", "two-hosts", "http-2", "h2-preface", "two-lengths", "obs-fold", "bare-lf", "chunk-extension"],
)
def test_requests_nginx_refuses_are_refused(request_bytes: bytes, status: int, word: str) -> None:
    with serving() as server:
        assert_problem(exchange(server, request_bytes), status, word)
        assert server.total("k") == 0


def test_absolute_form_targets_and_http_1_0_expectations_read_as_nginx_reads_them() -> None:
    with serving() as server:
        answer = exchange(server, b"GET http://elsewhere/metric/k/sum HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status_and_body(answer)[:1] == (200,) and answer.endswith(b'{"value": 0}')
        answer = exchange(
            server, b"POST /metric/k HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 7\r\n\r\nvalue=1"
        )
        assert answers_in(answer) == [200]  # no 100 Continue for an HTTP/1.0 client
        assert server.total("k") == 1


def test_header_names_with_an_underscore_are_dropped_not_read_as_dashes() -> None:
    with serving() as server:
        for _ in range(2):
            answer = exchange(
                server,
                b"POST /metric/under HTTP/1.1\r\nHost: x\r\nIdempotency_Key: same\r\nConnection: close\r\n"
                b"Content-Length: 7\r\n\r\nvalue=3",
            )
            assert status_and_body(answer)[0] == 200
            assert b"Idempotent-Replayed" not in answer
        assert server.total("under") == 6  # not taken as Idempotency-Key: both writes count


# -- rows 2-6, 13b: no client holds memory or the loop ------------------------------------


def test_a_header_that_never_ends_is_refused_after_a_few_kilobytes() -> None:
    with serving() as server, connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: ")
        sent = 0
        with contextlib.suppress(OSError):
            while sent < 16 * MIB:
                sock.sendall(b"a" * 65536)
                sent += 65536
        assert sent < 16 * MIB  # the server closed the connection long before
        assert_problem(read_until_closed(sock), 431, "headers")


def test_pipelined_floods_leave_other_clients_their_turn() -> None:
    """10 connections pipelining 20,000 health checks each; a prober on its own connection."""
    flood = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 20_000

    def pipeline(stop: threading.Event) -> None:
        with contextlib.suppress(OSError), connect(server) as sock:
            reader = threading.Thread(target=drain, args=(sock, stop), daemon=True)
            reader.start()
            sock.sendall(flood)
            reader.join(timeout=20)

    def drain(sock: socket.socket, stop: threading.Event) -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                if not sock.recv(1 << 16):
                    return

    with serving() as server, attacking(pipeline, clients=10):
        time.sleep(0.2)
        assert_responsive(latencies(server))


def test_tiny_chunks_cost_a_bounded_amount() -> None:
    """A body in 1-byte chunks is refused once it has used up its chunk allowance."""
    with serving() as server:
        before = server.worker_rss_bytes()

        def chunks(stop: threading.Event) -> None:
            with contextlib.suppress(OSError), connect(server) as sock:
                sock.sendall(b"POST /metric/tiny HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
                while not stop.is_set():
                    sock.sendall(b"1\r\n1\r\n" * 4096)

        with attacking(chunks, clients=10):
            assert_responsive(latencies(server))
        assert wait_for_rss(server, before + 10 * MIB) <= before + 10 * MIB
        assert server.total("tiny") == 0


def test_stalled_bodies_are_bounded_per_process_and_freed_when_they_close() -> None:
    """Three rounds of 100 connections, each sending all but the last byte of a 1 MiB body."""
    body = b"value=" + b"1" * (MIB - 7)
    head = b"POST /metric/stalled HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % MIB
    with serving() as server:
        before = server.worker_rss_bytes()
        statuses: list[bytes] = []
        for _ in range(3):
            with held_sockets(server, 100, head) as sockets:
                for sock in sockets:
                    with contextlib.suppress(OSError):
                        sock.sendall(body)
                assert statistics.median(latencies(server, 20)) < 0.05  # the bound of this row is memory
                sockets[-1].settimeout(5)
                with contextlib.suppress(OSError):
                    statuses.append(sockets[-1].recv(100))
            assert wait_for_rss(server, before + 10 * MIB) <= before + 10 * MIB
        # Past the process-wide cap, bodies are refused: 503 and closed.
        assert any(status.startswith(b"HTTP/1.1 503") for status in statuses), statuses
        assert server.total("stalled") == 0


def test_thousands_of_finished_keep_alive_clients_leave_nothing_behind() -> None:
    with serving() as server:
        requests.get(f"{server.url}/healthz", timeout=5)
        before = server.worker_rss_bytes()
        for _ in range(4):
            with held_sockets(server, 500, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") as sockets:
                for sock in sockets:
                    sock.settimeout(5)
                    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        assert wait_for_rss(server, before + 10 * MIB) <= before + 10 * MIB


def dropped_for_not_reading(server: Server) -> float:
    """How many connections the server has dropped for not reading its answers."""
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    found = re.search(r'^ringsum_edge_refusals_total\{reason="send_timeout"\} (\S+)$', metrics, flags=re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_answers_a_client_never_reads_are_dropped_after_the_idle_timeout() -> None:
    """20 connections pipeline requests for a 29 KB document and never read: once their
    answers back up, the server stops reading them, and drops them after the idle timeout."""
    pipelined = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 300
    with serving({"RINGSUM_IDLE_TIMEOUT": "2s"}) as server:
        before = server.worker_rss_bytes()
        sockets = []
        try:
            for _ in range(20):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # little room in the kernel
                sock.connect(("127.0.0.1", server.port))
                sock.sendall(pipelined)
                sockets.append(sock)
            assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
            # They read nothing until the server has given up on every one of them (past
            # the idle timeout once its answers back up; later on a loaded machine).
            deadline = time.monotonic() + 30
            while dropped_for_not_reading(server) < len(sockets) and time.monotonic() < deadline:
                time.sleep(0.1)
            for sock in sockets:  # the server gave up on them: reset or closed, well before they read it all
                sock.settimeout(15)
                received = 0
                with contextlib.suppress(OSError):
                    while chunk := sock.recv(1 << 16):
                        received += len(chunk)
                assert received < 300 * 29_000
        finally:
            for sock in sockets:
                sock.close()
        assert "send_timeout" in server.output()
        assert wait_for_rss(server, before + 10 * MIB) <= before + 10 * MIB


def test_at_the_descriptor_limit_slow_senders_make_way_for_new_clients() -> None:
    """With 256 descriptors the edge keeps 128 connections: 300 connections sending their
    headers slowly cannot lock legit clients out (the oldest slow one goes first)."""
    with (
        serving(open_files=256) as server,
        held_sockets(server, 300, b"POST /metric/slow HTTP/1.1\r\nHost: x\r\n") as slow,
    ):
        served = 0
        for _ in range(40):
            with contextlib.suppress(requests.RequestException):
                served += requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
        assert served >= 38, served
        assert_problem(read_until_closed(slow[0], timeout=5), 503, "connection limit")


# -- row 14: refusals are seen -----------------------------------------------------------


def test_refusals_are_logged_at_a_bounded_rate_and_counted_by_reason() -> None:
    with serving() as server:
        for _ in range(20):
            exchange(server, b"NOT HTTP\r\n\r\n")
        exchange(server, b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n")
        metrics = requests.get(f"{server.url}/metrics", timeout=5).text
        assert 'ringsum_edge_refusals_total{reason="malformed"} 20.0' in metrics
        assert 'ringsum_edge_refusals_total{reason="version"} 1.0' in metrics
        assert 'ringsum_edge_refusals_total{reason="read_timeout"} 0.0' in metrics
        lines = [line for line in server.output().splitlines() if "refused 127.0.0.1" in line]
        assert 1 <= len(lines) <= 3, lines  # one line a second, however many refusals
        assert "400 malformed" in lines[0]


# -- rows 10, 15: reloads ------------------------------------------------------------------


def test_a_reload_does_not_wait_for_a_client_trickling_a_body(tmp_path) -> None:
    with serving({"RINGSUM_DATA_DIR": str(tmp_path)}) as server, connect(server) as trickler:
        trickler.sendall(b"POST /metric/trickle HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nvalue=")
        time.sleep(0.3)
        server.process.send_signal(1)  # SIGHUP
        started = time.monotonic()
        assert_problem(read_until_closed(trickler, timeout=10), 503, "restarting")
        while True:
            with contextlib.suppress(requests.RequestException):
                if (
                    requests.get(f"{server.url}/healthz", timeout=1).status_code == 200
                    and time.monotonic() > started + 0.2
                ):
                    break
            assert time.monotonic() - started < 5
        assert time.monotonic() - started < 3


def test_reloads_reset_no_request_a_keep_alive_client_sent(tmp_path) -> None:
    """Three clients POST on keep-alive connections through ten reloads: every one answered."""
    errors: list[Exception] = []
    sent = [0, 0, 0]

    def post_forever(index: int, stop: threading.Event) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    answer = session.post(f"{server.url}/metric/reloaded", data="value=1", timeout=30)
                    assert answer.status_code == 200, answer.text
                    sent[index] += 1
                except Exception as error:
                    errors.append(error)

    with serving({"RINGSUM_DATA_DIR": str(tmp_path)}) as server:
        stop = threading.Event()
        clients = [threading.Thread(target=post_forever, args=(index, stop)) for index in range(3)]
        for client in clients:
            client.start()
        for _ in range(10):
            time.sleep(0.3)
            server.process.send_signal(1)  # SIGHUP
            time.sleep(0.3)
        stop.set()
        for client in clients:
            client.join(timeout=60)
        assert errors == []
        assert sum(sent) > 30 and server.total("reloaded") == sum(sent)
