"""``python -m benchmarks.attacks [--runs N] [--only GROUPS] [--quick]``: what hostile
clients do to ringsum and to its other clients. Each attack of docs/edge.md's threat
model that has a bound (endless or slow headers, stalled bodies, answers left unread,
thousands of sockets, request smuggling directly and through the shipped nginx and
Caddy configs, reloads under load) runs against a real ``python app.py``, ``--runs``
times (3 by default). Prints JSON, then the rows of ``python -m benchmarks``.

What is measured, and how (the row numbers are those of the threat model's table):

- **A legit client's latency during an attack** (rows 3, 4, 6): 200 sequential requests
  alternating ``GET /metric/probe/sum`` and ``/healthz`` on one keep-alive connection,
  each timed. The attackers run in a child process (threads there), so their busy
  threads never hold the GIL the probe needs: what the probe sees is the server.
- **The worker's RSS** (rows 2, 5, 6): before the attack, its peak (sampled every 50 ms
  meanwhile) and after the attack's connections close (polled for up to 10 s, until it
  is back within 10 MiB of the start).
- **Counts** (rows 1, 10, 13b, 15): smuggled requests, answers delivered to the wrong
  client, legit requests served, connection errors, time to a healthy new worker.

A figure is shown as "median (min-max)" over the runs; a latency or memory row is met on
its median, a count of failures only if it is 0 in every run.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import re
import resource
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

import requests

from tools.processes import descendants, launch, stopped_afterwards, wait_until_listening
from tools.proxies import installed, running

from .harness import Server, free_port, ringsum_server

Row = tuple[str, str, str, bool | None]
MIB = 1024 * 1024
KIB = 1024
PROBE_REQUESTS = 200
P50_BOUND_MS, MAX_BOUND_MS = 10.0, 250.0
RSS_SLACK = 10 * MIB
SETTLE_S = 10.0
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


# -- what a legit client sees, and what the worker holds --------------------------------------


def probe(port: int, count: int = PROBE_REQUESTS) -> dict[str, float]:
    """``count`` requests on one keep-alive connection, alternating a sum and /healthz: the
    median and the longest, in ms, and how many failed (an error or not a 200)."""
    taken, failed = [], 0
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for index in range(count):
        path = "/healthz" if index % 2 else "/metric/probe/sum"
        started = time.perf_counter()
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            failed += response.status != 200
        except (OSError, http.client.HTTPException):
            failed += 1
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        taken.append(time.perf_counter() - started)
    connection.close()
    return {"p50_ms": statistics.median(taken) * 1000, "max_ms": max(taken) * 1000, "failed": failed}


@contextlib.contextmanager
def rss_peak(server: Server) -> Iterator[Callable[[], int]]:
    """The worker's largest RSS seen (every 50 ms) while the ``with`` block runs."""
    peak = [server.worker_rss_bytes()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], server.worker_rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield lambda: peak[0]
    finally:
        done.set()
        sampler.join()


def settled_rss(server: Server, start: int) -> tuple[int, float]:
    """The worker's RSS once back within RSS_SLACK of ``start`` (or at SETTLE_S), and how
    long that took."""
    started = time.monotonic()
    while (rss := server.worker_rss_bytes()) > start + RSS_SLACK and time.monotonic() - started < SETTLE_S:
        time.sleep(0.1)
    return rss, time.monotonic() - started


def memory(start: int, peak: int, after: int, settle_s: float) -> dict[str, float]:
    return {"start_mib": start / MIB, "peak_mib": peak / MIB, "after_mib": after / MIB, "settle_s": settle_s}


def warm_up(server: Server) -> None:
    """A few requests first, so the worker's RSS at the start includes what serving costs."""
    with requests.Session() as session:
        for path in ("/healthz", "/metric/probe/sum", "/openapi.json", "/metrics"):
            session.get(f"{server.url}{path}", timeout=10)


# -- attackers: in a child process, so their threads never take the probe's GIL ---------------


@contextlib.contextmanager
def attacking(name: str, port: int, **options: Any) -> Iterator[dict[str, Any]]:
    """Run the attack ``name`` against ``port`` in a child process for the ``with`` block;
    the dict it yields is filled with the attacker's own report when the block ends."""
    context = multiprocessing.get_context("spawn")
    stop, ready, reports = context.Event(), context.Event(), context.Queue()
    child = context.Process(target=_attacker, args=(name, port, options, stop, ready, reports), daemon=True)
    child.start()
    if not ready.wait(60):
        child.kill()
        raise RuntimeError(f"the {name} attacker did not start")
    report: dict[str, Any] = {}
    try:
        yield report
    finally:
        stop.set()
        report.update(reports.get(timeout=60))
        child.join(30)


def _attacker(name: str, port: int, options: dict, stop: Any, ready: Any, reports: Any) -> None:
    cpu, wall = time.process_time(), time.perf_counter()
    report = ATTACKS[name](port, stop, ready, **options)
    report["cpu_share"] = (time.process_time() - cpu) / (time.perf_counter() - wall)  # of one core
    reports.put(report)


def _threads(count: int, target: Callable[[int], None]) -> list[threading.Thread]:
    threads = [threading.Thread(target=target, args=(index,), daemon=True) for index in range(count)]
    for thread in threads:
        thread.start()
    return threads


def _attack_until_stopped(
    connections: int, attack: Callable[[int], None], ready: threading.Event, stop: threading.Event
) -> None:
    """``connections`` threads of ``attack``; the probe is told to start, and the threads
    are waited for once it has finished and set ``stop``."""
    threads = _threads(connections, attack)
    ready.set()
    stop.wait()
    for thread in threads:
        thread.join(10)


def _status(sock: socket.socket, timeout: float = 2.0) -> int | None:
    """The status of the answer waiting on ``sock``, if any arrives (a refusal may be lost
    to a reset)."""
    sock.settimeout(timeout)
    with contextlib.suppress(OSError):
        found = re.match(rb"HTTP/1\.1 (\d{3}) ", sock.recv(64))
        return int(found.group(1)) if found else None
    return None


def _status_now(sock: socket.socket) -> int | None:
    """The status of an answer already waiting on ``sock``; None when there is none (the
    request is still held) or the connection was reset."""
    sock.setblocking(False)
    with contextlib.suppress(OSError):
        found = re.match(rb"HTTP/1\.1 (\d{3}) ", sock.recv(64))
        return int(found.group(1)) if found else None
    return None


def endless_headers(port: int, stop: Any, ready: Any, connections: int = 4, limit: int = 100 * MIB) -> dict:
    """``connections`` clients, each sending a header that never ends (a value on even
    ones, a name on odd ones) in 4 KiB writes, up to ``limit`` bytes, again and again:
    how many bytes each got in before the server closed, how long that took, and the
    status it answered."""
    tries: list[tuple[int, float, int | None]] = []
    piece = b"a" * (4 * KIB)

    def attack(index: int) -> None:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long" + (b": " if index % 2 == 0 else b"")
        while not stop.is_set():
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * KIB)  # little in flight: count what it read
            sent = 0
            started = time.perf_counter()
            try:
                sock.connect(("127.0.0.1", port))
                sock.sendall(head)
                while sent < limit and not stop.is_set():
                    sock.sendall(piece)
                    sent += len(piece)
            except OSError:
                pass
            else:
                if stop.is_set():
                    sock.close()
                    return
            taken = time.perf_counter() - started
            tries.append((len(head) + sent, taken, _status(sock)))
            sock.close()

    _attack_until_stopped(connections, attack, ready, stop)
    return {
        "tries": len(tries),
        "bytes_in_median": statistics.median([sent for sent, _, _ in tries]) if tries else 0,
        "bytes_in_max": max((sent for sent, _, _ in tries), default=0),
        "ms_median": statistics.median([taken for _, taken, _ in tries]) * 1000 if tries else 0,
        "ms_max": max((taken for _, taken, _ in tries), default=0) * 1000,
        "statuses": _counted(status for _, _, status in tries),
    }


def pipelines(port: int, stop: Any, ready: Any, connections: int = 10, requests: int = 20_000) -> dict:
    """``connections`` clients, each pipelining ``requests`` health checks at once and
    reading the answers as they come: how many were answered while the probe ran."""
    flood = HEALTHZ * requests
    answered = [0] * connections
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=120) for _ in range(connections)]

    def send(index: int) -> None:
        with contextlib.suppress(OSError):
            sockets[index].sendall(flood)

    def read(index: int) -> None:
        tail = b""
        with contextlib.suppress(OSError):
            while chunk := sockets[index].recv(1 << 16):
                data = tail + chunk
                answered[index] += data.count(b"HTTP/1.1 200")
                tail = data[-11:]  # a status line split between two reads is counted once

    started = time.perf_counter()
    threads = _threads(connections, send) + _threads(connections, read)
    time.sleep(0.3)  # every flood under way
    ready.set()
    stop.wait()
    seconds = time.perf_counter() - started
    total = sum(answered)
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    for thread in threads:
        thread.join(10)
    for sock in sockets:
        sock.close()
    return {"sent": connections * requests, "answered": total, "seconds": seconds, "per_s": total / seconds}


def tiny_chunks(port: int, stop: Any, ready: Any, connections: int = 10, size: int = 1) -> dict:
    """``connections`` clients, each sending a chunked body in ``size``-byte chunks as fast
    as the server reads them, and starting another body when one is refused."""
    head = b"POST /metric/tiny HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    batch = (b"%x\r\n" % size + b"1" * size + b"\r\n") * 4096
    sent = [0] * connections
    statuses: list[int | None] = []

    def attack(index: int) -> None:
        while not stop.is_set():
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            except OSError:
                continue  # the server is busy: try again
            try:
                sock.sendall(head)
                while not stop.is_set():
                    sock.sendall(batch)
                    sent[index] += len(batch)
            except OSError:
                statuses.append(_status(sock))
            sock.close()

    _attack_until_stopped(connections, attack, ready, stop)
    return {"bodies_refused": len(statuses), "statuses": _counted(statuses), "wire_bytes": sum(sent)}


def slow_headers(port: int, stop: Any, ready: Any, connections: int = 1500) -> dict:
    """``connections`` clients, each sending the start of a request and then one more
    header byte a second, never finishing it; none reconnects once the server closes it."""
    sockets = []
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"POST /metric/slow HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        sock.setblocking(False)
        sockets.append(sock)
    ready.set()
    open_ = set(range(connections))
    while not stop.wait(1.0):
        for index in list(open_):
            try:
                sockets[index].send(b"a")
            except OSError:
                open_.discard(index)
    statuses = []
    for index, sock in enumerate(sockets):
        if index not in open_:
            statuses.append(None)
            continue
        try:  # closed by the server with an answer (a 503 to make room)
            data = sock.recv(64)
            found = re.match(rb"HTTP/1\.1 (\d{3}) ", data)
            statuses.append(int(found.group(1)) if found else None)
        except BlockingIOError:
            pass  # still held
        except OSError:
            statuses.append(None)
    for sock in sockets:
        sock.close()
    return {"opened": connections, "closed_by_server": len(statuses), "statuses": _counted(statuses)}


ATTACKS: dict[str, Callable[..., dict]] = {
    "endless_headers": endless_headers,
    "pipelines": pipelines,
    "tiny_chunks": tiny_chunks,
    "slow_headers": slow_headers,
}


def _counted(statuses: Iterator[int | None] | list[int | None]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[str(status or "none")] = counts.get(str(status or "none"), 0) + 1
    return counts


# -- rows 3, 4, 6: a legit client during an attack ------------------------------------------------


def under_attack(server: Server, name: str, probes: int = PROBE_REQUESTS, **options: Any) -> dict:
    """The probe while ``name`` runs, the worker's RSS around it, the attacker's report."""
    start = server.worker_rss_bytes()
    with rss_peak(server) as peak:
        with attacking(name, server.port, **options) as report:
            cpu, wall = server.cpu_seconds(), time.perf_counter()
            seen = probe(server.port, probes)
            server_cpu_share = (server.cpu_seconds() - cpu) / (time.perf_counter() - wall)
        after, settle_s = settled_rss(server, start)
    return {**seen, **memory(start, peak(), after, settle_s), "server_cpu_share": server_cpu_share, "attacker": report}


def latency_rows(runs: int, quick: bool) -> dict:
    """Rows 3, 4 and 6, each attack ``runs`` times on one server."""
    attacks = {
        "row3_endless_header": ("endless_headers", {"connections": 4}),
        "row4_pipelines_10": ("pipelines", {"connections": 10, "requests": 20_000}),
        # Reported, not bounded: 100 probes, each waiting a turn of 50 pipelines.
        "row4_pipelines_50": ("pipelines", {"connections": 50, "requests": 20_000, "probes": 100}),
        "row6_chunks_1_byte": ("tiny_chunks", {"connections": 10, "size": 1}),
        "row6_chunks_2_bytes": ("tiny_chunks", {"connections": 10, "size": 2}),
    }
    found: dict[str, list] = {"baseline": [], **{case: [] for case in attacks}}
    with ringsum_server() as server:
        warm_up(server)
        for _ in range(runs):
            found["baseline"].append(probe(server.port))
            for case, (name, options) in attacks.items():
                if quick and case == "row4_pipelines_50":
                    continue
                found[case].append(under_attack(server, name, **options))
    return found


# -- row 2: stalled bodies and finished clients leave no memory behind ----------------------------


def stalled_bodies(server: Server, rounds: int = 3, count: int = 200) -> dict:
    """``rounds`` of ``count`` connections, each sending all but the last byte of a 1 MiB
    body, held for a moment and closed: the worker's RSS at its peak and after each."""
    head = b"POST /metric/stalled HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % MIB
    body = b"value=" + b"1" * (MIB - 7)  # one byte short
    start = server.worker_rss_bytes()
    found: dict[str, Any] = {"start_mib": start / MIB, "rounds": [], "bodies": count}
    for _ in range(rounds):
        with rss_peak(server) as peak:
            sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(count)]
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.sendall(head + body)
            seen = probe(server.port, 20)  # a small request gets through while they are held
            statuses = _counted(_status_now(sock) for sock in sockets)
            for sock in sockets:
                sock.close()
            after, settle_s = settled_rss(server, start)
        found["rounds"].append(
            {"peak_mib": peak() / MIB, "after_mib": after / MIB, "settle_s": settle_s, "statuses": statuses, **seen}
        )
    found["after_mib"] = found["rounds"][-1]["after_mib"]
    found["peak_mib"] = max(round_["peak_mib"] for round_ in found["rounds"])
    return found


def finished_clients(server: Server, total: int = 10_000, held: int = 500) -> dict:
    """``total`` keep-alive clients, ``held`` at a time: each connects, sends one health
    check, reads its answer; then the batch closes."""
    start = server.worker_rss_bytes()
    answered = 0
    with rss_peak(server) as peak:
        for _ in range(total // held):
            sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(held)]
            for sock in sockets:
                sock.sendall(HEALTHZ)
            for sock in sockets:
                answered += sock.recv(4096).startswith(b"HTTP/1.1 200")
            for sock in sockets:
                sock.close()
        after, settle_s = settled_rss(server, start)
    return {**memory(start, peak(), after, settle_s), "answered": answered, "clients": total}


def memory_rows(runs: int, quick: bool) -> dict:
    found: dict[str, list] = {"row2_stalled_bodies": [], "row2_finished_clients": []}
    with ringsum_server() as server:
        warm_up(server)
        for _ in range(runs):
            found["row2_stalled_bodies"].append(stalled_bodies(server, count=60 if quick else 200))
            found["row2_finished_clients"].append(finished_clients(server, total=2_000 if quick else 10_000))
    return found


# -- row 5: answers a client never reads ----------------------------------------------------------


def _refusals(server: Server, reason: str) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    found = re.search(rf'ringsum_edge_refusals_total\{{reason="{reason}"\}} ([0-9.e+]+)', text)
    return float(found.group(1)) if found else 0.0


def unread_answers(server: Server, connections: int = 50, pipelined: int = 300) -> dict:
    """``connections`` clients with a 4 KiB receive buffer, each pipelining ``pipelined``
    requests for the 29 KB OpenAPI document and never reading: how long until the server
    dropped them all (its send_timeout refusals), and the worker's RSS."""
    start = server.worker_rss_bytes()
    dropped_before = _refusals(server, "send_timeout")
    sockets = []
    with rss_peak(server) as peak:
        for _ in range(connections):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # little room in the kernel
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * pipelined)
            sockets.append(sock)
        sent_at = time.monotonic()
        dropped = 0.0
        while time.monotonic() - sent_at < 60:
            dropped = _refusals(server, "send_timeout") - dropped_before
            if dropped >= connections:
                break
            time.sleep(0.1)
        dropped_after_s = time.monotonic() - sent_at
        for sock in sockets:
            sock.close()
        after, settle_s = settled_rss(server, start)
    return {**memory(start, peak(), after, settle_s), "dropped": dropped, "dropped_after_s": dropped_after_s}


def unread_rows(runs: int, quick: bool) -> dict:
    with ringsum_server(env={"RINGSUM_IDLE_TIMEOUT": "5s"}) as server:
        warm_up(server)
        return {"row5_unread_answers": [unread_answers(server, 20 if quick else 50) for _ in range(runs)]}


# -- row 13b: at the open-file limit ---------------------------------------------------------------


def _limit_open_files(count: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


@contextlib.contextmanager
def limited_server(open_files: int, env: Mapping[str, str] | None = None) -> Iterator[Server]:
    """``python app.py`` as harness.ringsum_server starts it, with ``open_files`` as its
    soft and hard descriptor limit."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ringsum-bench-data-") as data_dir:
        server = launch(
            [sys.executable, "app.py", "--workers", "1", "--port", str(port)],
            {**os.environ, "RINGSUM_DATA_DIR": data_dir, **(env or {})},
            port,
            preexec_fn=partial(_limit_open_files, open_files),
        )
        wait_until_listening(server, timeout=20)
        with stopped_afterwards(server):
            yield server


def legit_new_connections(port: int, count: int = 120) -> dict:
    """``count`` health checks, each on a connection of its own (a new client each time)."""
    served, taken = 0, []
    for _ in range(count):
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            served += response.status == 200
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        taken.append(time.perf_counter() - started)
    return {
        "served": served,
        "count": count,
        "p50_ms": statistics.median(taken) * 1000,
        "max_ms": max(taken) * 1000,
    }


def descriptor_rows(runs: int, quick: bool) -> dict:
    found = []
    with limited_server(1100) as server:
        warm_up(server)
        for _ in range(runs):
            with attacking("slow_headers", server.port, connections=1500) as report:
                seen = legit_new_connections(server.port, 120)
            found.append({**seen, "attacker": report})
    return {"row13b_slow_headers_at_the_limit": found}


# -- rows 10, 15: reloads -------------------------------------------------------------------------


def _worker(server: Server) -> int | None:
    children = descendants(server.process.pid)
    return children[-1] if children else None


def reload_with_trickler(server: Server) -> dict:
    """SIGHUP while a client trickles a body (a byte every 0.1 s): seconds until /healthz
    answers 200 from the new worker, and what the trickler got."""
    old = _worker(server)
    outcome: list[int | None] = []

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /metric/trickle HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nvalue=")
            sock.settimeout(0.1)
            try:
                while True:
                    with contextlib.suppress(TimeoutError):
                        data = sock.recv(64)
                        found = re.match(rb"HTTP/1\.1 (\d{3}) ", data)
                        outcome.append(int(found.group(1)) if found else None)
                        return
                    sock.sendall(b"1")
            except OSError:
                outcome.append(None)

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    time.sleep(0.3)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGHUP)
    while (worker := _worker(server)) in (old, None) and time.monotonic() - signalled < 30:
        time.sleep(0.005)
    healthy_s = None
    while time.monotonic() - signalled < 30:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{server.url}/healthz", timeout=10).status_code == 200:
                healthy_s = time.monotonic() - signalled
                break
        time.sleep(0.005)
    trickler.join(15)
    return {"healthy_after_s": healthy_s, "trickler_got": outcome[0] if outcome else None, "new_worker": worker != old}


def reloads_under_posts(server: Server, key: str, reloads: int = 10) -> dict:
    """Three clients POST on keep-alive connections (requests.Session) through ``reloads``
    SIGHUPs: connection errors, POSTs answered 200, and the key's sum."""
    errors: list[str] = []
    answered = [0, 0, 0]
    stop = threading.Event()

    def post(index: int) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    answer = session.post(f"{server.url}/metric/{key}", data="value=1", timeout=30)
                    if answer.status_code == 200:
                        answered[index] += 1
                    else:
                        errors.append(f"{answer.status_code} {answer.text[:80]}")
                except requests.RequestException as error:
                    errors.append(type(error).__name__)

    clients = _threads(3, post)
    for _ in range(reloads):
        time.sleep(0.3)
        server.process.send_signal(signal.SIGHUP)
        time.sleep(0.3)
    stop.set()
    for client in clients:
        client.join(60)
    return {
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "answered": sum(answered),
        "sum": server.total(key),
    }


def reload_rows(runs: int, quick: bool) -> dict:
    found: dict[str, list] = {"row10_reload_with_trickler": [], "row15_reloads_under_posts": []}
    with ringsum_server() as server:  # memory storage with a data dir of its own
        warm_up(server)
        for run in range(runs):
            found["row10_reload_with_trickler"].append(reload_with_trickler(server))
            found["row15_reloads_under_posts"].append(reloads_under_posts(server, f"reloaded.{run}"))
    return found


# -- row 1: nothing smuggled, directly or through the shipped proxy configs ------------------------

HIDDEN = b"POST /metric/%s HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\nvalue=9"
# HOST becomes the proxy's own address: Caddy answers a Host it has no site for with an
# empty 200 of its own, and the attack would never reach ringsum.
SMUGGLING_HEADS = {
    "upgrade_h2c": b"POST /metric/outer HTTP/1.1\r\nHost: HOST\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
    b"Content-Length: %d\r\n\r\n",
    "upgrade_websocket": b"GET /metric/outer/sum HTTP/1.1\r\nHost: HOST\r\nConnection: Upgrade\r\n"
    b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Content-Length: %d\r\n\r\n",
    "upgrade_websocket_post": b"POST /metric/outer HTTP/1.1\r\nHost: HOST\r\nConnection: keep-alive, Upgrade\r\n"
    b"Upgrade: websocket\r\nContent-Length: %d\r\n\r\n",
    "connect": b"CONNECT HOST HTTP/1.1\r\nHost: HOST\r\nContent-Length: %d\r\n\r\n",
}


@contextlib.contextmanager
def proxy(kind: str, upstream_port: int) -> Iterator[str | None]:
    """nginx or Caddy with the shipped config in front of ``upstream_port``: its URL, or
    None when it is not installed."""
    program = installed(kind)
    if program is None:
        yield None
        return
    with running(program, kind, upstream_port) as url:
        yield url


def smuggle_once(port: int, head: bytes, hidden: bytes) -> tuple[int | None, int]:
    """One try: ``head``, then 5 ms later in a TCP segment of its own a body that is a
    request. The status of the first answer, and how many answers came within 20 ms of it."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(head % len(hidden))
        time.sleep(0.005)
        with contextlib.suppress(OSError):
            sock.sendall(hidden)
        received = b""
        sock.settimeout(1.0)
        with contextlib.suppress(OSError):
            while not _whole_answer(received) and (chunk := sock.recv(65536)):
                received += chunk
            sock.settimeout(0.02)  # a second answer, had the body run as a request, is right behind
            while chunk := sock.recv(65536):
                received += chunk
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", received)
        return (int(statuses[0]) if statuses else None), len(statuses)
    return None, 0


def _whole_answer(received: bytes) -> bool:
    head, found, body = received.partition(b"\r\n\r\n")
    if not found:
        return False
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    return length is None or len(body) >= int(length.group(1))


def _attack_requests_seen(server: Server) -> float:
    """Requests ringsum saw that a legit client here never sends: any POST, any answer but
    200, any refusal at the edge (a lower bound on the attack requests that reached it: a
    GET that nginx stripped of its Upgrade is answered 200 like a legit one)."""
    seen = 0.0
    for line in requests.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith("ringsum_edge_refusals_total{") or (
            line.startswith("ringsum_http_requests_total{") and ('method="POST"' in line or 'status="200"' not in line)
        ):
            seen += float(line.rsplit(" ", 1)[1])
    return seen


def smuggling_run(server: Server, url: str, key: str, tries: int) -> dict:
    """``tries`` of each smuggling head through ``url`` while 4 legit clients read their own
    keys (own.0-3 hold 1-4) there: requests smuggled, answers not theirs."""
    port = int(url.rsplit(":", 1)[1])
    host = url.removeprefix("http://").encode()
    stop = threading.Event()
    answered, wrong, failed = [0], [], [0]

    def legit(index: int) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    answer = session.get(f"{url}/metric/own.{index}/sum", timeout=5)
                except requests.RequestException:
                    failed[0] += 1
                    continue
                if answer.status_code == 200 and answer.content == b'{"value": %d}' % (index + 1):
                    answered[0] += 1
                elif answer.status_code in (502, 503, 504):
                    failed[0] += 1  # the proxy's own failure: not someone else's answer
                else:
                    wrong.append(f"{index}: {answer.status_code} {answer.text[:60]}")

    seen_before = _attack_requests_seen(server)
    clients = _threads(4, legit)
    statuses: dict[str, dict[str, int]] = {}
    doubled = 0
    try:
        for name, head in SMUGGLING_HEADS.items():
            seen = []
            for _ in range(tries):
                status, answers = smuggle_once(port, head.replace(b"HOST", host), HIDDEN % key.encode())
                seen.append(status)
                doubled += answers > 1
            statuses[name] = _counted(seen)
        time.sleep(0.5)  # anything a proxy still holds reaches ringsum, or never will
    finally:
        stop.set()
        for client in clients:
            client.join(30)
    return {
        "tries": tries,
        "smuggled": server.total(key) // 9,
        "reached_ringsum": _attack_requests_seen(server) - seen_before,
        "wrong": len(wrong),
        "wrong_examples": wrong[:5],
        "legit_answered": answered[0],
        "legit_failed": failed[0],
        "attacker_two_answers": doubled,
        "attacker_statuses": statuses,
    }


def smuggling_rows(runs: int, quick: bool) -> dict:
    tries = 5 if quick else 30
    found: dict[str, Any] = {}
    with ringsum_server() as server:
        for index in range(4):
            requests.post(f"{server.url}/metric/own.{index}", data=f"value={index + 1}", timeout=10)
        for kind in ("direct", "nginx", "caddy"):
            with contextlib.nullcontext(server.url) if kind == "direct" else proxy(kind, server.port) as url:
                if url is None:
                    found[f"row1_smuggling_{kind}"] = "not installed"
                    continue
                found[f"row1_smuggling_{kind}"] = [
                    smuggling_run(server, url, f"smuggled.{kind}.{run}", tries) for run in range(runs)
                ]
    return found


# -- the step ---------------------------------------------------------------------------------------

GROUPS: dict[str, Callable[[int, bool], dict]] = {
    "latency": latency_rows,  # rows 3, 4, 6
    "memory": memory_rows,  # row 2
    "unread": unread_rows,  # row 5
    "descriptors": descriptor_rows,  # row 13b
    "reloads": reload_rows,  # rows 10, 15
    "smuggling": smuggling_rows,  # row 1
}


def run(runs: int = 3, quick: bool = False, only: list[str] | None = None) -> dict:
    """Every group of rows (or ``only`` those), each attack ``runs`` times."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))  # 1,500 sockets and more
    found: dict[str, Any] = {"runs": runs, "load_average": os.getloadavg()}
    for name in only or list(GROUPS):
        started = time.monotonic()
        found.update(GROUPS[name](runs, quick))
        found[f"{name}_seconds"] = time.monotonic() - started
    found["load_average_after"] = os.getloadavg()
    return found


# -- the rows of the table --------------------------------------------------------------------------


def spread(values: list[float], digits: int = 1) -> str:
    """ "median (min-max)" of ``values``."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _latency_row(figure: str, runs: list[dict], base: list[dict], note: str = "", bounded: bool = True) -> Row:
    p50s, maxes = [run["p50_ms"] for run in runs], [run["max_ms"] for run in runs]
    failed = sum(run["failed"] for run in runs)
    server_cpu = [run["server_cpu_share"] * 100 for run in runs]
    attacker_cpu = [run["attacker"]["cpu_share"] * 100 for run in runs]
    measured = (
        f"p50 {spread(p50s, 2)} ms, max {spread(maxes)} ms, {failed} failed"
        f" (no attack: p50 {spread([b['p50_ms'] for b in base], 2)}, max {spread([b['max_ms'] for b in base])} ms)"
        f"; CPU, % of a core: server {spread(server_cpu, 0)}, attacker {spread(attacker_cpu, 0)}" + note
    )
    met = statistics.median(p50s) <= P50_BOUND_MS and statistics.median(maxes) <= MAX_BOUND_MS and failed == 0
    return (
        figure,
        measured,
        "p50 <= 10 ms, max <= 250 ms" if bounded else "(reported)",
        met if bounded else None,
    )


def _memory_row(figure: str, runs: list[dict], note: str = "") -> Row:
    grown = [run["after_mib"] - run["start_mib"] for run in runs]
    measured = (
        f"start {spread([run['start_mib'] for run in runs])}, peak {spread([run['peak_mib'] for run in runs])}, "
        f"after {spread([run['after_mib'] for run in runs])} MiB (after - start: {spread(grown)} MiB)" + note
    )
    return (figure, measured, "after <= start + 10 MiB", statistics.median(grown) <= RSS_SLACK / MIB)


def rows(found: dict) -> list[Row]:
    shown: list[Row] = []
    base = found.get("baseline", [])
    if runs := found.get("row3_endless_header"):
        attackers = [run["attacker"] for run in runs]
        statuses = _summed(attacker["statuses"] for attacker in attackers)
        shown.append(
            _latency_row("3: a header value or name that never ends, 4 connections again and again: legit", runs, base)
        )
        shown.append(
            (
                "3: bytes a client got in before the server closed / time to the close (4 KiB writes, 16 KiB send buffer)",
                f"{spread([a['bytes_in_median'] / KIB for a in attackers])} KiB (largest "
                f"{max(a['bytes_in_max'] for a in attackers) / KIB:.0f} KiB) / {spread([a['ms_median'] for a in attackers], 2)}"
                f" ms (longest {max(a['ms_max'] for a in attackers):.0f} ms); {sum(a['tries'] for a in attackers)} tries,"
                f" answers {_statuses(statuses)}; worker RSS start {spread([run['start_mib'] for run in runs])},"
                f" peak {spread([run['peak_mib'] for run in runs])}, after {spread([run['after_mib'] for run in runs])} MiB",
                "431 after ~40 KiB",
                None,
            )
        )
    for case, label in (("row4_pipelines_10", "10"), ("row4_pipelines_50", "50")):
        if runs := found.get(case):
            rates = [run["attacker"]["per_s"] for run in runs]
            note = f"; flood answered {spread(rates, 0)}/s meanwhile"
            shown.append(
                _latency_row(
                    f"4: {label} connections x 20,000 pipelined GET /healthz: legit",
                    runs,
                    base,
                    note,
                    bounded=label == "10",
                )
            )
    for case, label in (("row6_chunks_1_byte", "1-byte"), ("row6_chunks_2_bytes", "2-byte")):
        if runs := found.get(case):
            refused = _summed(run["attacker"]["statuses"] for run in runs)
            shown.append(_latency_row(f"6: 10 connections sending chunked bodies in {label} chunks: legit", runs, base))
            shown.append(
                _memory_row(
                    f"6: {label} chunks: worker RSS",
                    runs,
                    f"; bodies refused: {_statuses(refused)}",
                )
            )
    if runs := found.get("row2_stalled_bodies"):
        per_round = " / ".join(
            spread([run["rounds"][index]["after_mib"] for run in runs]) for index in range(len(runs[0]["rounds"]))
        )
        statuses = _summed(round_["statuses"] for run in runs for round_ in run["rounds"])
        probe_max = [max(round_["max_ms"] for round_ in run["rounds"]) for run in runs]
        shown.append(
            _memory_row(
                f"2: {len(runs[0]['rounds'])} rounds of {runs[0]['bodies']} stalled 1 MiB bodies: worker RSS",
                runs,
                f"; after each round {per_round} MiB; held bodies answered {_statuses(statuses)};"
                f" a probe meanwhile: max {spread(probe_max)} ms",
            )
        )
    if runs := found.get("row2_finished_clients"):
        shown.append(
            _memory_row(
                f"2: {runs[0]['clients']:,} keep-alive clients (500 held at a time, then closed): worker RSS",
                runs,
                f"; {sum(run['answered'] for run in runs):,} of {sum(run['clients'] for run in runs):,} answered",
            )
        )
    if runs := found.get("row5_unread_answers"):
        dropped = [run["dropped"] for run in runs]
        shown.append(
            _memory_row(
                "5: 50 connections pipelining GET /openapi.json, never reading (RINGSUM_IDLE_TIMEOUT=5s): worker RSS",
                runs,
                f"; all dropped after {spread([run['dropped_after_s'] for run in runs])} s"
                f" ({spread(dropped, 0)} dropped)",
            )
        )
    if runs := found.get("row13b_slow_headers_at_the_limit"):
        shares = [run["served"] / run["count"] * 100 for run in runs]
        shown.append(
            (
                "13b: open-file limit 1,100, 1,500 connections sending headers slowly: legit requests served",
                f"{spread(shares)}% of 120 (p50 {spread([run['p50_ms'] for run in runs], 2)} ms, max "
                f"{spread([run['max_ms'] for run in runs])} ms); slow ones closed by the server "
                f"{spread([run['attacker']['closed_by_server'] for run in runs], 0)}",
                ">= 95%",
                min(shares) >= 95,
            )
        )
    if runs := found.get("row10_reload_with_trickler"):
        healthy = [run["healthy_after_s"] if run["healthy_after_s"] is not None else float("inf") for run in runs]
        shown.append(
            (
                "10: SIGHUP while a client trickles a body: until /healthz answers 200 from the new worker",
                f"{spread(healthy, 2)} s; the trickler got {_statuses(_counted(run['trickler_got'] for run in runs))}",
                "<= 2 s",
                statistics.median(healthy) <= 2,
            )
        )
    if runs := found.get("row15_reloads_under_posts"):
        errors = sum(run["errors"] for run in runs)
        equal = sum(run["sum"] == run["answered"] for run in runs)
        shown.append(
            (
                "15: 10 SIGHUPs while 3 clients POST on keep-alive connections: connection errors; sum = POSTs answered",
                f"{errors} errors in {len(runs)} runs; sum equal in {equal} of {len(runs)}"
                f" ({spread([run['answered'] for run in runs], 0)} POSTs a run)",
                "0 errors, sums equal",
                errors == 0 and equal == len(runs),
            )
        )
    for kind in ("direct", "nginx", "caddy"):
        runs = found.get(f"row1_smuggling_{kind}")
        if runs is None:
            continue
        if isinstance(runs, str):
            shown.append((f"1: smuggling, {kind}", runs, "0 / 0", None))
            continue
        figure = (
            f"1: smuggling (Upgrade h2c/websocket, CONNECT; {runs[0]['tries']} tries each, body 5 ms after the head),"
            f" {kind}: smuggled / answers not theirs"
        )
        smuggled = sum(run["smuggled"] for run in runs)
        wrong = sum(run["wrong"] for run in runs)
        shown.append(
            (
                figure,
                f"{smuggled} / {wrong} in {len(runs)} runs (attack requests ringsum saw:"
                f" {spread([run['reached_ringsum'] for run in runs], 0)} of {len(SMUGGLING_HEADS) * runs[0]['tries']} a run;"
                f" 4 legit clients: {spread([run['legit_answered'] for run in runs], 0)}"
                f" own answers a run, {sum(run['legit_failed'] for run in runs)} failed)",
                "0 / 0",
                smuggled == 0 and wrong == 0,
            )
        )
    return shown


def _summed(counts: Iterator[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for status, times in count.items():
            total[status] = total.get(status, 0) + times
    return total


def _statuses(counts: dict[str, int]) -> str:
    return ", ".join(f"{status} x{times}" for status, times in sorted(counts.items())) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attacks", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one run, smaller attacks")
    parser.add_argument("--only", default="", help="comma-separated: " + ",".join(GROUPS))
    args = parser.parse_args()
    only = [name.strip() for name in args.only.split(",") if name.strip()] or None
    found = run(1 if args.quick else args.runs, args.quick, only)
    print(json.dumps(found, indent=2))
    for figure, measured, target, met in rows(found):
        print(f"| {figure} | {measured} | {target} | {'-' if met is None else 'yes' if met else '**no**'} |")


if __name__ == "__main__":
    main()
