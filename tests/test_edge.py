"""The edge (docs/api.md#http-framing and docs/api.md#running) on a real ``python app.py``, over raw sockets: slow, cut,
idle and ambiguous requests cannot stall the service or make it record a wrong number."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import statistics
import time

import pytest
import requests
from raw_http import assert_problem, connect, exchange, held_sockets, latencies, read_until_closed, status_and_body
from serving import serving

pytestmark = pytest.mark.process


STALLED_BODY = b'POST /metric/stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"value"'


def test_stalled_bodies_hold_no_request_thread() -> None:
    with serving() as server, held_sockets(server, 64, STALLED_BODY):
        taken = latencies(server)
        # Generous bounds for a shared CI machine; `make bench` holds the real target.
        assert statistics.median(taken) < 0.05, taken
        assert max(taken) < 0.5, taken
        assert server.total("stalled") == 0


def test_slow_header_sockets_hold_no_request_thread() -> None:
    with serving() as server, held_sockets(server, 200, b"POST /metric/slow HTTP/1.1\r\nHo"):
        taken = latencies(server)
        assert statistics.median(taken) < 0.05, taken
        assert max(taken) < 0.5, taken


def test_a_stalled_body_is_answered_408_after_the_read_timeout_and_records_nothing() -> None:
    with serving({"RINGSUM_READ_TIMEOUT": "2s"}) as server, connect(server) as sock:
        sock.sendall(b"POST /metric/late HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nvalue=")
        started = time.monotonic()
        answer = read_until_closed(sock, timeout=15)
        waited = time.monotonic() - started
        assert 1.5 <= waited < 6, waited
        assert_problem(answer, 408, "2s")
        with contextlib.suppress(OSError):  # the rest arrives too late to count
            sock.sendall(b"1234")
        assert server.total("late") == 0


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"POST /metric/cut HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nvalue=12", id="form"),
        pytest.param(b'POST /metric/cut HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n{"value": 12}', id="json"),
        pytest.param(
            b"POST /metric/cut HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nvalue=12\r\n",
            id="chunked-without-last-chunk",
        ),
        pytest.param(
            b'POST /metric HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n[{"key": "cut", "value": 12}]',
            id="batch",
        ),
    ],
)
def test_a_body_cut_off_by_the_client_records_nothing(request_bytes: bytes) -> None:
    with serving() as server:
        with connect(server) as sock:
            sock.sendall(request_bytes)
            sock.shutdown(socket.SHUT_WR)  # the client goes away mid-body
            assert read_until_closed(sock) == b""  # nothing was answered: nothing was taken
        assert server.total("cut") == 0
        requests.post(f"{server.url}/metric/cut", data="value=1", timeout=5)  # the same key still records
        assert server.total("cut") == 1


CHUNKED_TWELVE = b"8\r\nvalue=12\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    "framing, status, recorded",
    [
        pytest.param(b"Transfer-Encoding: chunked\r\nConnection: close", 200, 12, id="chunked-whole"),
        pytest.param(b"Content-Length: 4\r\nTransfer-Encoding: chunked", 400, 0, id="content-length-and-chunked"),
    ],
)
def test_content_length_with_transfer_encoding_is_a_400_and_records_nothing(
    framing: bytes, status: int, recorded: int
) -> None:
    """RFC 9112 section 6.3: both framings at once is ambiguous (request smuggling); the
    same chunked body framed once is the control, and records."""
    with serving() as server:
        answer = exchange(
            server, b"POST /metric/framed HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n" + CHUNKED_TWELVE
        )
        if status == 400:
            assert_problem(answer, 400, "Content-Length and Transfer-Encoding")
        assert status_and_body(answer)[0] == status
        assert server.total("framed") == recorded


@pytest.mark.parametrize(
    "request_bytes, status, word",
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URL"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 40_000 + b"\r\n\r\n", 431, "headers"),
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "HTTP/1.1"),
        (b"POST /metric/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400, "chunked"),
        (b"POST /metric/k HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413, "RINGSUM_MAX_BODY"),
    ],
    ids=["long-url", "large-headers", "not-http", "other-transfer-coding", "declared-too-large"],
)
def test_errors_of_the_server_layer_are_problems_too(request_bytes: bytes, status: int, word: str) -> None:
    with serving() as server:
        assert_problem(exchange(server, request_bytes), status, word)
        assert server.total("k") == 0


def test_thousands_of_idle_connections_lock_nobody_out() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 3200:
        pytest.skip(f"this machine allows {hard} open files per process; the test needs 3,200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 3200), hard))
    try:
        with serving() as server, held_sockets(server, 3000, b""):
            with requests.Session() as session:
                assert session.get(f"{server.url}/healthz", timeout=10).status_code == 200
                assert session.post(f"{server.url}/metric/k", data="value=2", timeout=10).status_code == 200
            assert server.total("k") == 2
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() -> None:
    with serving({"RINGSUM_IDLE_TIMEOUT": "1s"}) as server, connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        answer = read_until_closed(sock, timeout=10)
        assert status_and_body(answer)[0] == 200  # answered, kept open, then closed when idle
        assert 0.8 <= time.monotonic() - started < 5


def test_a_client_that_expects_100_continue_gets_it_before_sending() -> None:
    body = json.dumps([{"key": "continued", "value": 1}] * 100).encode()
    with serving() as server, connect(server) as sock:
        sock.sendall(
            b"POST /metric HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        code, _, answer = status_and_body(read_until_closed(sock))
        assert (code, json.loads(answer)) == (200, {"recorded": 100})
        assert server.total("continued") == 100


def test_pipelined_requests_are_answered_in_order() -> None:
    with serving() as server:
        answer = exchange(
            server,
            b"POST /metric/piped HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\nvalue=5"
            b"GET /metric/piped/sum HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        assert answer.count(b"HTTP/1.1 200 OK") == 2
        assert answer.endswith(b'{"value": 5}')


def test_at_the_descriptor_limit_the_longest_idle_connection_makes_way() -> None:
    """With 256 descriptors the edge keeps 128 connections: 300 idle ones cannot lock a
    new client out, and the ones shed first are the oldest."""
    with serving(open_files=256) as server, held_sockets(server, 300, b"") as idle:
        with requests.Session() as session:
            assert session.get(f"{server.url}/healthz", timeout=10).status_code == 200
        assert read_until_closed(idle[0], timeout=5) == b""  # the oldest was closed by the server
        idle[-1].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status_and_body(read_until_closed(idle[-1]))[0] == 200  # the newest still served
