"""What /metrics costs: a scrape with 1,000 keys exported (RINGSUM_EXPORT) against one
without, on memory and on Redis; the same with 10,000 more keys counted as dropped; a
scrape of ``--workers 2`` (counters read from every worker's files); and the CPU the
per-request metrics cost, kept in process (one worker) or shared (``--workers N``).

``python -m benchmarks.scrape [memory|redis|hook]`` prints one part as JSON.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from contextlib import ExitStack

import requests

from .harness import Server, ringsum_server, run_parts
from .http_load import redis_server

EXPORTED = 1000
COUNTED = 10_000  # keys past the cap: the scrape counts them, up to 10 x the cap
SAMPLES = 40


def _fill(server: Server, prefix: str, keys: int) -> None:
    with requests.Session() as session:
        for start in range(0, keys, 5000):
            batch = [{"key": f"{prefix}{index:06d}", "value": index} for index in range(start, min(start + 5000, keys))]
            session.post(f"{server.url}/metric", json=batch).raise_for_status()


def _scrape_ms(servers: dict[str, Server], samples: int = SAMPLES) -> dict[str, dict[str, float]]:
    """p50 and p99 of GET /metrics on each server, taking turns."""
    took: dict[str, list[float]] = {name: [] for name in servers}
    with requests.Session() as session:
        for _ in range(samples):
            for name, server in servers.items():
                started = time.perf_counter()
                session.get(f"{server.url}/metrics").raise_for_status()
                took[name].append((time.perf_counter() - started) * 1000)
    return {
        name: {"p50_ms": statistics.median(times), "p99_ms": sorted(times)[int(len(times) * 0.99) - 1]}
        for name, times in took.items()
    }


def _exported_count(server: Server) -> int:
    text = requests.get(f"{server.url}/metrics").text
    return sum(1 for line in text.splitlines() if line.startswith("ringsum_window_sum{"))


def memory_scrapes() -> dict:
    """Two memory servers holding the same 1,000 keys, export on and off; then 10,000 more."""
    export = {"RINGSUM_EXPORT": "*", "RINGSUM_DATA_DIR": ""}
    with ExitStack() as stack:
        on = stack.enter_context(ringsum_server(env=export))
        off = stack.enter_context(ringsum_server(env={"RINGSUM_DATA_DIR": ""}))
        for server in (on, off):
            _fill(server, "a.", EXPORTED)
        assert _exported_count(on) == EXPORTED
        results = {f"{name}_{EXPORTED}": found for name, found in _scrape_ms({"export": on, "no_export": off}).items()}
        _fill(on, "b.", COUNTED)
        results[f"export_{EXPORTED}_plus_{COUNTED}_dropped"] = _scrape_ms({"export": on})["export"]
    return results


def redis_scrapes() -> dict:
    """One Redis, 1,000 keys: a server exporting them, one not, and ``--workers 2``
    (no export: what reading every worker's counters adds); then 10,000 more keys."""
    with ExitStack() as stack:
        uri, _ = stack.enter_context(redis_server())
        on = stack.enter_context(ringsum_server(env={"RINGSUM_STORAGE_URI": uri, "RINGSUM_EXPORT": "*"}))
        off = stack.enter_context(ringsum_server(env={"RINGSUM_STORAGE_URI": uri}))
        shared = stack.enter_context(ringsum_server(workers=2, env={"RINGSUM_STORAGE_URI": uri}))
        _fill(on, "a.", EXPORTED)
        assert _exported_count(on) == EXPORTED
        found = _scrape_ms({"export": on, "no_export": off, "workers_2_no_export": shared})
        results = {f"{name}_{EXPORTED}": figures for name, figures in found.items()}
        _fill(on, "b.", COUNTED)
        results[f"export_{EXPORTED}_plus_{COUNTED}_dropped"] = _scrape_ms({"export": on})["export"]
    return results


def hook_cost(count: int = 20_000) -> dict:
    """CPU µs per request of the metrics hook (count and latency of one route), in an
    app whose instruments are in process (one worker) and in one whose instruments
    write to a shared directory (each worker under --workers N > 1). Best of 7."""
    from ringsum import create_app
    from ringsum.web import state

    def per_call_us(app: object) -> float:
        observed = state.metrics(app)

        def hook() -> None:
            observed.observe("/metric/<key>", "POST", 200, 0.00003)
            if observed.sync_evictions is not None:
                observed.sync_evictions()

        best = float("inf")
        for _ in range(7):
            started = time.process_time()
            for _ in range(count):
                hook()
            best = min(best, (time.process_time() - started) / count * 1e6)
        return best

    results = {}
    with tempfile.TemporaryDirectory() as shared:
        for name, directory in (("in_process_us", None), ("shared_us", shared), ("in_process_again_us", None)):
            if directory is None:
                os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            else:
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
            app = create_app({"RINGSUM_DATA_DIR": ""})
            try:
                results[name] = per_call_us(app)
            finally:
                state.close_app(app)
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return results


def rows(found: dict) -> list[tuple[str, str, str, bool | None]]:
    memory, redis, hook = found["memory"], found["redis"], found["hook"]
    on, off = f"export_{EXPORTED}", f"no_export_{EXPORTED}"
    dropped = f"export_{EXPORTED}_plus_{COUNTED}_dropped"
    return [
        (
            "GET /metrics with 1,000 keys exported, memory: p50 / p99 (export off: p50)",
            f"{memory[on]['p50_ms']:.1f} / {memory[on]['p99_ms']:.1f} ms ({memory[off]['p50_ms']:.1f} ms)",
            "p50 < 50 ms",
            memory[on]["p50_ms"] < 50,
        ),
        (
            "GET /metrics with 1,000 keys exported, Redis: p50 / p99 (export off: p50)",
            f"{redis[on]['p50_ms']:.1f} / {redis[on]['p99_ms']:.1f} ms ({redis[off]['p50_ms']:.1f} ms)",
            "p50 < 200 ms",
            redis[on]["p50_ms"] < 200,
        ),
        (
            "GET /metrics, 1,000 exported + 10,000 more keys counted as dropped: memory / Redis p50",
            f"{memory[dropped]['p50_ms']:.1f} / {redis[dropped]['p50_ms']:.1f} ms",
            "(reported)",
            None,
        ),
        (
            "GET /metrics on Redis, no export: 1 worker / --workers 2 (every worker's counters summed) p50",
            f"{redis[off]['p50_ms']:.1f} / {redis[f'workers_2_no_export_{EXPORTED}']['p50_ms']:.1f} ms",
            "(reported)",
            None,
        ),
        (
            "metrics per request, CPU: in process (1 worker) / shared (--workers N > 1)",
            f"{min(hook['in_process_us'], hook['in_process_again_us']):.1f} / {hook['shared_us']:.1f} µs",
            "(reported)",
            None,
        ),
    ]


def main() -> None:
    run_parts(
        "python -m benchmarks.scrape", __doc__, {"memory": memory_scrapes, "redis": redis_scrapes, "hook": hook_cost}
    )


if __name__ == "__main__":
    main()
