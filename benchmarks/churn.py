"""A probe GET while batches re-post 100,000 keys every second, with and without
``ringsum.serving.gc_policy``, next to the longest single hold of the storage lock.

Each second the poster sends 100 batches of 1,000 events; a tenth of the keys are new
each second and as many stop being posted, so keys keep being created and aged out
(a 10 s window) and the collector has work: the churn a full GC pass would stall.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path

import requests

from .harness import ROOT, ringsum_server, wrk

KEYS = 100_000
BATCH = 1000
NEW_PER_SECOND = 10_000
NAMES = 2 * KEYS  # key names cycle through this many, so old ones expire


def _bodies(second: int) -> list[str]:
    first = second * NEW_PER_SECOND
    return [
        json.dumps([{"key": f"churn.{(first + start + index) % NAMES}", "value": 1} for index in range(BATCH)])
        for start in range(0, KEYS, BATCH)
    ]


def _post_every_second(url: str, stop: threading.Event, posted: list[int]) -> None:
    cached: dict[int, list[str]] = {}
    with requests.Session() as session:
        second = 0
        while not stop.is_set():
            started = time.monotonic()
            bodies = cached.setdefault(second % (NAMES // NEW_PER_SECOND), _bodies(second))
            for body in bodies:
                session.post(f"{url}/metric", data=body, timeout=30).raise_for_status()
                posted[0] += BATCH
            second += 1
            stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))


def churn(policy: bool, seconds: int = 20) -> dict:
    """Probe latency (one connection, wrk) for ``seconds`` of churn after a first pass
    over every key; ``policy`` runs the GC policy in the server process."""
    gc_log = Path(tempfile.mkdtemp()) / "gc.log"
    env = {
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).with_name("gc_probe")), str(ROOT)]),
        "RINGSUM_BENCH_GC_LOG": str(gc_log),
        "RINGSUM_WINDOW": "10s",
        "RINGSUM_MAX_KEYS": str(NAMES),
        **({} if policy else {"RINGSUM_BENCH_GC_POLICY": "off"}),
    }
    stop, posted = threading.Event(), [0]
    with ringsum_server(env=env) as server:
        poster = threading.Thread(target=_post_every_second, args=(server.url, stop, posted))
        poster.start()
        try:
            while posted[0] < 2 * KEYS:  # every key created once, before the measurement
                if not poster.is_alive():
                    raise RuntimeError("the poster stopped: see its traceback above")
                time.sleep(0.1)
            gc_log.write_text("")
            started, posted_before = time.monotonic(), posted[0]
            load = wrk(f"{server.url}/metric/absent/sum", seconds=seconds, connections=1)
            rate = (posted[0] - posted_before) / (time.monotonic() - started)
        finally:
            stop.set()
            poster.join()
    pauses = [float(line.split()[1]) for line in gc_log.read_text().splitlines()]
    return {
        "posted_per_s": rate,
        "p50_ms": load.p50_ms,
        "p99_ms": load.p99_ms,
        "max_ms": load.max_ms,
        "longest_gc_pause_ms": max(pauses, default=0.0),
        "gc_pauses_over_1ms": len(pauses),
    }


def longest_lock_hold_ms(rounds: int = 200) -> float:
    """The longest the storage lock is held by one 1,000-event batch over 100,000 keys,
    each event opening a new slot (the dearest batch this churn sends), in-process, with
    the collector off so that its pauses, measured apart, are not counted twice."""
    import gc

    from ringsum.config import storage_options
    from ringsum.storage.memory import MemoryStorage

    now = [1_800_000_000_000_000]
    storage = MemoryStorage(storage_options(window_us=3_600_000_000, resolution_us=1_000_000), clock=lambda: now[0])
    try:
        storage.record_many([(f"churn.{index}", 1) for index in range(KEYS)])
        longest = 0.0
        gc.disable()
        for round_ in range(rounds):
            now[0] += 1_000_000
            first = round_ * BATCH % KEYS
            events = [(f"churn.{first + index}", 1) for index in range(BATCH)]
            started = time.perf_counter()
            storage.record_many(events)
            longest = max(longest, time.perf_counter() - started)
    finally:
        gc.enable()
        storage.close()
    return longest * 1000


def churn_with_and_without_policy(seconds: int = 20) -> dict:
    return {
        "longest_lock_hold_ms": longest_lock_hold_ms(),
        "without_policy": churn(policy=False, seconds=seconds),
        "with_policy": churn(policy=True, seconds=seconds),
    }
