"""Listing with 100,000 live keys: ``GET /metric?limit=N`` latency on memory (with a
probe GET meanwhile), on Redis, and ``/metrics`` on Redis; and what the ordered index
costs a write that creates a key (in-process, memory storage).

``python -m benchmarks.listing [memory|redis|index]`` prints one part as JSON.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

import requests
from sortedcontainers import SortedList

from .harness import Server, ringsum_server, run_parts
from .http_load import redis_server

KEYS = 100_000
SAMPLES = 200


def _fill(server: Server, keys: int = KEYS) -> None:
    with requests.Session() as session:
        for start in range(0, keys, 10_000):
            batch = [{"key": f"key{index:06d}", "value": 1} for index in range(start, min(start + 10_000, keys))]
            session.post(f"{server.url}/metric", json=batch).raise_for_status()


def _latencies_ms(session: requests.Session, url: str, samples: int) -> list[float]:
    took = []
    for _ in range(samples):
        started = time.perf_counter()
        session.get(url).raise_for_status()
        took.append((time.perf_counter() - started) * 1000)
    return took


def _summary(took: list[float]) -> dict:
    ordered = sorted(took)
    return {
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1],
        "max_ms": ordered[-1],
    }


def memory_listing(samples: int = SAMPLES) -> dict:
    """Each limit alone, then a probe GET /sum while a client lists 10,000 keys nonstop."""
    results: dict = {"keys": KEYS}
    with ringsum_server() as server, requests.Session() as session:
        _fill(server)
        for limit in (1, 100, 10_000):
            runs = samples if limit < 10_000 else samples // 4
            results[f"limit_{limit}"] = _summary(_latencies_ms(session, f"{server.url}/metric?limit={limit}", runs))
        results["probe_alone"] = _summary(_latencies_ms(session, f"{server.url}/metric/key000001/sum", samples))
        stop = threading.Event()

        def list_nonstop() -> None:
            with requests.Session() as lister:
                while not stop.is_set():
                    lister.get(f"{server.url}/metric?limit=10000").raise_for_status()

        lister = threading.Thread(target=list_nonstop)
        lister.start()
        try:
            probe = _latencies_ms(session, f"{server.url}/metric/key000001/sum", samples)
        finally:
            stop.set()
            lister.join()
        results["probe_while_listing_10000"] = _summary(probe)
    return results


def redis_listing(samples: int = 50) -> dict:
    """One app process on a throwaway Redis: the first key, and a /metrics scrape."""
    results: dict = {"keys": KEYS}
    with (
        redis_server() as (uri, _),
        ringsum_server(env={"RINGSUM_STORAGE_URI": uri}) as server,
        requests.Session() as session,
    ):
        _fill(server)
        results["limit_1"] = _summary(_latencies_ms(session, f"{server.url}/metric?limit=1", samples))
        results["limit_100"] = _summary(_latencies_ms(session, f"{server.url}/metric?limit=100", samples))
        results["metrics_scrape"] = _summary(_latencies_ms(session, f"{server.url}/metrics", samples))
    return results


def index_cost(keys: int = KEYS) -> dict:
    """In-process, memory storage: microseconds a new key spends in the index
    (SortedList.add of ``keys`` new keys into an index of ``keys``, the write path's
    only new work) against a whole record of a new key; and ``keys()`` itself (the
    time under the lock) at 2 x ``keys`` keys."""
    from ringsum.config import storage_options
    from ringsum.storage.memory import MemoryStorage

    names = [f"key{index:06d}" for index in range(2 * keys)]
    held, new = names[::2], names[1::2]
    index = SortedList(held)
    add_us = _per_call_us(index.add, new)
    storage = MemoryStorage(storage_options(window_us=3_600_000_000, resolution_us=1_000_000, max_keys=4 * keys))
    try:
        for key in held:
            storage.record(key, 1)
        record_us = _per_call_us(lambda key: storage.record(key, 1), new)
        listing_us = {
            f"keys_limit_{limit}_us": _per_call_us(
                lambda after, limit=limit: storage.keys("", limit, after), held[:: len(held) // 50]
            )
            for limit in (1, 100, 10_000)
        }
    finally:
        storage.close()
    return {"index_add_us": add_us, "record_new_key_us": record_us, "share": add_us / record_us, **listing_us}


def _per_call_us(call: Callable[[str], object], keys: list[str]) -> float:
    started = time.perf_counter()
    for key in keys:
        call(key)
    return (time.perf_counter() - started) / len(keys) * 1e6


def main() -> None:
    run_parts(
        "python -m benchmarks.listing", __doc__, {"memory": memory_listing, "redis": redis_listing, "index": index_cost}
    )


if __name__ == "__main__":
    main()
