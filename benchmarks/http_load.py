"""Items 1, 2, 4, 5 and 6: ringsum over HTTP against its baselines, measured in one run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import requests

from .harness import Server, free_port, median, ringsum_server, serving, wrk

POST_BODY = '{"value": 3}'
READ_KEY_VALUES = 10


def _prime_read_key(server: Server) -> None:
    for value in range(READ_KEY_VALUES):
        requests.post(f"{server.url}/metric/read", json={"value": value}, timeout=5).raise_for_status()


def _batch_body(count: int, key: Callable[[int], str]) -> str:
    return json.dumps([{"key": key(index), "value": index % 7} for index in range(count)])


def _alternating(servers: dict[str, Server], rounds: int, seconds: float) -> dict:
    """Median POST and GET req/s of each server, and the server's CPU microseconds per
    request (every process of it, from /proc: on a 2-core machine shared with wrk the
    steadier figure), taking turns A B C A B C ... so drifts in the machine's load fall
    on every server alike. Each figure also keeps its runs, for ranges."""
    for server in servers.values():
        _prime_read_key(server)
    runs: dict[str, dict[str, list[float]]] = {
        name: {"post": [], "get": [], "post_cpu_us": [], "get_cpu_us": []} for name in servers
    }
    for _ in range(rounds):
        for name, server in servers.items():
            for method, url, body in (
                ("post", f"{server.url}/metric/post", POST_BODY),
                ("get", f"{server.url}/metric/read/sum", None),
            ):
                cpu_before = server.cpu_seconds()
                load = wrk(url, seconds=seconds, body=body)
                runs[name][f"{method}_cpu_us"].append((server.cpu_seconds() - cpu_before) * 1e6 / max(load.requests, 1))
                runs[name][method].append(load.requests_per_s)
    return {
        name: {**{figure: median(values) for figure, values in by.items()}, "runs": by} for name, by in runs.items()
    }


def single_posts(rounds: int, seconds: float) -> dict:
    """POST and GET req/s: ringsum; the bare floor and the naive design on granian; the bare
    floor on ringsum's edge (what the edge costs); the naive design on gunicorn sync with one
    worker. Runs alternate A B C D E."""
    gunicorn = [
        sys.executable,
        "-m",
        "gunicorn",
        "-w",
        "1",
        "-k",
        "sync",
        "-b",
        "127.0.0.1:{port}",
        "--log-level",
        "warning",
    ]
    with ExitStack() as stack:
        servers = {
            "ringsum": stack.enter_context(ringsum_server("ringsum")),
            "bare": stack.enter_context(ringsum_server("bare")),
            "bare_edge": stack.enter_context(ringsum_server("bare", server="edge")),
            "naive": stack.enter_context(ringsum_server("naive")),
            "naive_gunicorn": stack.enter_context(serving([*gunicorn, "benchmarks.baselines:naive_app()"])),
        }
        return _alternating(servers, rounds, seconds)


def access_log_cost(rounds: int, seconds: float) -> dict:
    """The single-request step's load (POST and GET, wrk -c16) on ringsum with
    RINGSUM_ACCESS_LOG=off and =text (the default), taking turns: what the access log
    costs in server CPU per request (its lines go to a file, as under a service manager).
    Rounds go off-text, text-off, ...: whichever runs first in a round gets no edge."""
    with ExitStack() as stack:
        servers = {
            mode: stack.enter_context(ringsum_server(env={"RINGSUM_ACCESS_LOG": mode})) for mode in ("off", "text")
        }
        runs: dict[str, dict[str, list[float]]] = {mode: {} for mode in servers}
        for turn in range(rounds):
            order = list(servers) if turn % 2 == 0 else list(reversed(servers))
            found = _alternating({mode: servers[mode] for mode in order}, 1, seconds)
            for mode, by in found.items():
                for figure, values in by["runs"].items():
                    runs[mode].setdefault(figure, []).extend(values)
    found = {
        mode: {**{figure: median(values) for figure, values in by.items()}, "runs": by} for mode, by in runs.items()
    }
    found["line_us"] = access_line_us()
    for method in ("post", "get"):
        cpu = f"{method}_cpu_us"
        found[f"{method}_cpu_ratio"] = found["text"][cpu] / found["off"][cpu]
        # The same cost from the line alone: steadier than the difference of two loaded runs.
        found[f"{method}_line_ratio"] = 1 + found["line_us"] / found["off"][cpu]
    return found


def access_line_us(count: int = 100_000) -> float:
    """CPU µs one text access line costs the edge (``Connection._log_access``, the line's
    format and its share of the buffered writes, to a file), in process, best of 7."""
    from ringsum.http.access_log import AccessLog, AccessLogMode, TrustedProxies
    from ringsum.http.edge import Connection
    from ringsum.http.http1 import Request

    class Answered:
        peer = ("127.0.0.1", 50000)
        started = time.perf_counter()
        log_access = Connection._log_access

    request = Request("POST", b"/metric/post", "HTTP/1.1", ((b"host", b"127.0.0.1"),), b'{"value": 3}', False, True)
    answered = Answered()
    best = float("inf")
    with tempfile.TemporaryFile() as sink:
        log = AccessLog(AccessLogMode.TEXT, TrustedProxies(), fd=sink.fileno())
        for _ in range(7):
            started = time.process_time()
            for _ in range(count):
                answered.log_access(log, request, 200, 2)
            log.flush()
            best = min(best, (time.process_time() - started) / count * 1e6)
    return best


def batch_ingest(rounds: int, seconds: float, batch: int = 1000) -> dict:
    """Values/s when posting batches of ``batch`` events over 100 keys."""
    body = _batch_body(batch, lambda index: f"batch.{index % 100}")
    with ringsum_server() as server:
        rates = [wrk(f"{server.url}/metric", seconds=seconds, connections=4, body=body) for _ in range(rounds)]
    assert all(load.bad == 0 for load in rates), "batch requests failed"
    return {"values_per_s": median([load.requests_per_s * batch for load in rates])}


def flat_reads(rounds: int, seconds: float, events: int = 1_000_000) -> dict:
    """Median GET latency (one connection) with 10 vs ``events`` events in the window."""
    with ringsum_server() as server, requests.Session() as session:
        _prime_read_key(server)
        body = _batch_body(1000, lambda _: "many")
        for _ in range(events // 1000):
            session.post(f"{server.url}/metric", data=body, timeout=30).raise_for_status()
        few, many = [], []
        for _ in range(rounds):
            few.append(wrk(f"{server.url}/metric/read/sum", seconds=seconds, connections=1).p50_ms)
            many.append(wrk(f"{server.url}/metric/many/sum", seconds=seconds, connections=1).p50_ms)
    return {
        "events": events,
        "p50_ms_10_events": median(few),
        f"p50_ms_{events}_events": median(many),
        "ratio": median(many) / median(few),
    }


def keys_at_scale(keys: int = 100_000, window_s: int = 10) -> dict:
    """``keys`` live keys: RSS per key, then request latency (one connection)
    through sweeps of them all live and through the sweep that drops them all at once,
    with a ``window_s`` window so the mass expiry happens during the run."""
    gc_log = Path(tempfile.mkdtemp()) / "gc.log"
    probe = {"PYTHONPATH": str(Path(__file__).with_name("gc_probe")), "RINGSUM_BENCH_GC_LOG": str(gc_log)}
    with ringsum_server(env={"RINGSUM_WINDOW": f"{window_s}s", **probe}) as server, requests.Session() as session:
        time.sleep(1.5)  # let start-up allocations settle before the baseline RSS
        before = server.worker_rss_bytes()
        started = time.monotonic()
        for start in range(0, keys, 1000):
            body = _batch_body(1000, lambda index, start=start: f"key.{start + index}")
            session.post(f"{server.url}/metric", data=body, timeout=30).raise_for_status()
        held = server.worker_rss_bytes() - before
        live = len(
            session.get(f"{server.url}/metric", params={"limit": 10_000, "prefix": "key."}, timeout=30).json()[
                "metrics"
            ]
        )
        remaining = window_s + 3 - (time.monotonic() - started)
        load = wrk(f"{server.url}/metric/absent/sum", seconds=max(round(remaining), 3), connections=1)
        after = session.get(f"{server.url}/metric", params={"prefix": "key."}, timeout=30).json()["metrics"]
    pauses = [float(line.split()[1]) for line in gc_log.read_text().splitlines()] if gc_log.exists() else []
    return {
        "longest_gc_pause_ms": max(pauses, default=0.0),
        "keys": keys,
        "listed_while_live": live,
        "left_after_expiry": len(after),
        "rss_bytes_per_key": held / keys,
        "p50_ms": load.p50_ms,
        "p99_ms": load.p99_ms,
        "max_ms": load.max_ms,
    }


def sweep_duration(keys: int = 100_000) -> dict:
    """One sweep of ``keys`` live keys, and of as many keys expiring at once
    (the worst case), with the longest the lock is held in one slice of that sweep."""
    from ringsum.config import storage_options
    from ringsum.storage.memory import MemoryStorage

    now = [1_800_000_000_000_000]
    storage = MemoryStorage(storage_options(window_us=3_600_000_000, resolution_us=1_000_000), clock=lambda: now[0])
    holds: list[float] = []
    drop_expired = storage._drop_expired  # runs with the lock held: time each call

    def timed_drop(*args: object) -> int:
        started = time.perf_counter()
        try:
            return drop_expired(*args)
        finally:
            holds.append(time.perf_counter() - started)

    storage._drop_expired = timed_drop
    try:
        live, expired = [], []
        for _ in range(5):
            storage.record_many([(f"key.{index}", 1) for index in range(keys)])
            live.append(_timed(storage.sweep))
            now[0] += 3_602_000_000  # past the window and its tick: every key has aged out
            expired.append(_timed(storage.sweep))
            assert storage.stats().keys == 0
    finally:
        storage.close()
    return {
        "keys": keys,
        "sweep_ms_live": median(live) * 1000,
        "sweep_ms_all_expired": median(expired) * 1000,
        "longest_lock_hold_ms": max(holds) * 1000,
    }


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


@contextmanager
def redis_server() -> Iterator[tuple[str, int]]:
    """A throwaway redis-server on a free port; yields its URI and process id."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )
        try:
            uri = f"redis://127.0.0.1:{port}/0"
            import redis

            client = redis.Redis.from_url(uri)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            yield uri, process.pid
        finally:
            process.terminate()
            process.wait()


def redis_vs_memory(rounds: int, seconds: float, workers: int = 2) -> dict:
    """``--workers 2`` on Redis against one process on memory, alternating."""
    with redis_server() as (uri, _), ExitStack() as stack:
        memory = stack.enter_context(ringsum_server())
        shared = stack.enter_context(ringsum_server(workers=workers, env={"RINGSUM_STORAGE_URI": uri}))
        servers = {"memory": memory, "redis": shared}
        return _alternating(servers, rounds, seconds)


__all__ = ["batch_ingest", "flat_reads", "keys_at_scale", "redis_vs_memory", "single_posts", "sweep_duration"]
