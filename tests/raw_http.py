"""Raw-socket clients for the edge tests: what a hostile or careless client sends, byte
for byte, and what it gets back."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator

import requests
from serving import Server


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (or ``timeout``)."""
    sock.settimeout(timeout)
    received = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def exchange(server: Server, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection and read the answer until the server closes it."""
    with connect(server) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def status_and_body(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def assert_problem(answer: bytes, status: int, *words: str) -> None:
    code, headers, body = status_and_body(answer)
    assert code == status, answer
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == status and problem["type"] == "about:blank"
    for word in words:
        assert word in problem["detail"], problem["detail"]


def latencies(server: Server, count: int = 60) -> list[float]:
    """Seconds taken by ``count`` requests alternating GET sum and /healthz, on one connection."""
    taken = []
    with requests.Session() as session:
        for index in range(count):
            path = "/healthz" if index % 2 else "/metric/probe/sum"
            started = time.perf_counter()
            assert session.get(f"{server.url}{path}", timeout=10).status_code == 200
            taken.append(time.perf_counter() - started)
    return taken


@contextlib.contextmanager
def held_sockets(server: Server, count: int, first_bytes: bytes) -> Iterator[list[socket.socket]]:
    """``count`` connections that send ``first_bytes`` and then nothing more."""
    sockets = []
    try:
        for _ in range(count):
            sock = connect(server)
            if first_bytes:
                sock.sendall(first_bytes)
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()
