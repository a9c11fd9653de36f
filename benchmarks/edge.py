"""Issue 13: what hostile clients cost everybody else, on ``python app.py``.

A probe (wrk, one connection) reads ``GET /metric/probe/sum`` and ``GET /healthz``
while sockets that stall are held open, and without them, in the same run.
"""

from __future__ import annotations

import contextlib
import resource
import socket
from collections.abc import Iterator

from .harness import Load, Server, median, ringsum_server, wrk

STALLED_BODY = b'POST /metric/stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"value"'
SLOW_HEADERS = b"POST /metric/slow HTTP/1.1\r\nHo"


@contextlib.contextmanager
def _held(server: Server, count: int, first_bytes: bytes) -> Iterator[None]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            if first_bytes:
                sock.sendall(first_bytes)
            sockets.append(sock)
        yield
    finally:
        for sock in sockets:
            sock.close()


def _probe(server: Server, seconds: float) -> dict[str, float]:
    loads: list[Load] = [
        wrk(f"{server.url}/metric/probe/sum", seconds=max(1, round(seconds / 2)), connections=1),
        wrk(f"{server.url}/healthz", seconds=max(1, round(seconds / 2)), connections=1),
    ]
    return {
        "p50_ms": median([load.p50_ms for load in loads]),
        "max_ms": max(load.max_ms for load in loads),
        "bad": sum(load.bad for load in loads),
    }


def hostile_clients(rounds: int, seconds: float) -> dict:
    """Probe latency with nothing held, 64 stalled bodies, 200 slow headers, 3,000 idle sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    cases = {
        "none": (0, b""),
        "stalled_bodies_64": (64, STALLED_BODY),
        "slow_headers_200": (200, SLOW_HEADERS),
        "idle_3000": (3000, b""),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    with ringsum_server("ringsum", env={"RINGSUM_READ_TIMEOUT": "1h", "RINGSUM_IDLE_TIMEOUT": "1h"}) as server:
        for _ in range(rounds):
            for name, (count, first_bytes) in cases.items():
                with _held(server, count, first_bytes):
                    runs[name].append(_probe(server, seconds))
    return {
        name: {
            "p50_ms": median([run["p50_ms"] for run in found]),
            "max_ms": max(run["max_ms"] for run in found),
            "bad": sum(run["bad"] for run in found),
        }
        for name, found in runs.items()
    }
