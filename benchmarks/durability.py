"""Issue 9: what the write-ahead log costs (POST req/s by fsync mode), how long a restart
takes, and how long a checkpoint stalls requests."""

from __future__ import annotations

import gc
import tempfile
import threading
import time
from contextlib import ExitStack
from typing import Any

import requests

from ringsum.config import read_settings
from ringsum.storage.journal_writer import Journal
from ringsum.storage.memory import MemoryStorage

from .harness import ringsum_server, wrk
from .http_load import POST_BODY, _alternating, _batch_body

T0 = 1_800_000_000_000_000
MODES = {"none": {"RINGSUM_DATA_DIR": ""}, "everysec": {}, "always": {"RINGSUM_FSYNC": "always"}}


def post_cost(rounds: int, seconds: float) -> dict:
    """POST and GET req/s of ``python app.py`` with no data dir, the default (everysec) and
    ``always``, taking turns in one run."""
    with ExitStack() as stack:
        servers = {name: stack.enter_context(ringsum_server(env=env)) for name, env in MODES.items()}
        return _alternating(servers, rounds, seconds)


def record_cost(calls: int = 20_000) -> dict:
    """In-process: µs per record() without a data dir and with the log (everysec), best
    of five loops each: the log's own cost per write, free of HTTP noise."""
    results = {}
    for name in ("none", "everysec"):
        with tempfile.TemporaryDirectory() as data_dir:
            storage = _storage(data_dir if name == "everysec" else "", _Clock())
            best = float("inf")
            for _ in range(5):
                started = time.perf_counter()
                for _ in range(calls):
                    storage.record("k", 1)
                best = min(best, (time.perf_counter() - started) / calls)
            storage.close()
        results[f"{name}_us"] = best * 1e6
    return results


class _Clock:
    def __init__(self) -> None:
        self.now_us = T0

    def __call__(self) -> int:
        return self.now_us


def _storage(data_dir: str, clock: _Clock, **settings: str) -> MemoryStorage:
    return MemoryStorage(
        read_settings({"RINGSUM_DATA_DIR": data_dir, **settings}, environ={}).storage_options(), clock=clock
    )


def _restart_seconds(data_dir: str, clock: _Clock, runs: int = 3) -> float:
    """Best of ``runs`` starts (lock, read, replay, age out) of memory storage on ``data_dir``."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        _storage(data_dir, clock).close()
        best = min(best, time.perf_counter() - started)
    return best


def restart_time(keys: int = 100_000, entries: int = 2_000_000) -> dict:
    """Start time of memory storage holding ``keys`` keys (one entry each), and ``entries``
    entries (1,000 keys, one value a second), from the log alone and from a checkpoint."""
    results = {}
    for name, batches in {
        f"{keys}_keys": [[(f"key.{start + n}", 1) for n in range(1000)] for start in range(0, keys, 1000)],
        f"{entries}_entries": [[(f"key.{n}", 1) for n in range(1000)]] * (entries // 1000),
    }.items():
        with tempfile.TemporaryDirectory() as data_dir:
            clock = _Clock()
            storage = _storage(data_dir, clock)
            for batch in batches:
                storage.record_many(batch)
                clock.now_us += 1_000_000 if name.endswith("entries") else 0
            held = storage.stats()
            storage.close()
            from_log = _restart_seconds(data_dir, clock)
            storage = _storage(data_dir, clock)
            storage.record("key.0", 1)  # something to fold
            storage.checkpoint()
            storage.close()
            from_snapshot = _restart_seconds(data_dir, clock)
        results[name] = {
            "keys": held.keys,
            "entries": held.entries,
            "from_log_s": from_log,
            "from_snapshot_s": from_snapshot,
        }
    return results


def checkpoint_stall(keys: int = 100_000, seconds: float = 8, checkpoint: str = "2s") -> dict:
    """Longest POST latency (one connection) on a server holding ``keys`` keys, with a
    checkpoint every ``checkpoint``, against the same server without a data dir."""
    maxima: dict[str, list[float]] = {"checkpoints": [], "none": []}
    envs = {"checkpoints": {"RINGSUM_CHECKPOINT": checkpoint}, "none": {"RINGSUM_DATA_DIR": ""}}
    with ExitStack() as stack:
        servers = {name: stack.enter_context(ringsum_server(env=env)) for name, env in envs.items()}
        for server in servers.values():
            with requests.Session() as session:
                for start in range(0, keys, 1000):
                    batch = _batch_body(1000, lambda index, start=start: f"key.{start + index}")
                    session.post(f"{server.url}/metric", data=batch, timeout=30).raise_for_status()
        for _ in range(2):
            for name, server in servers.items():
                load = wrk(f"{server.url}/metric/post", seconds=seconds, connections=1, body=POST_BODY)
                maxima[name].append(load.max_ms)
    return {"max_ms_with_checkpoints": max(maxima["checkpoints"]), "max_ms_without": max(maxima["none"])}


def rotation_hold(keys: int = 100_000, checkpoints: int = 3) -> dict:
    """In-process: the longest a checkpoint holds the storage lock, and the longest
    record() call from a writer thread (about 5,000 a second) while checkpoints of
    ``keys`` keys run. The heap is frozen for the garbage collector, whose pauses the
    "scale" step measures: here they would hide what the checkpoint itself costs."""
    with tempfile.TemporaryDirectory() as data_dir:
        clock = _Clock()
        storage = _storage(data_dir, clock, RINGSUM_MAX_KEYS=str(keys + 1))
        storage.record_many([(f"key.{n}", 1) for n in range(keys)])
        stop, longest = threading.Event(), [0.0]
        quiet = 0.0
        gc.collect()
        gc.freeze()

        def writer() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                storage.record("writer", 1)
                longest[0] = max(longest[0], time.perf_counter() - started)
                time.sleep(0.0002)

        thread = threading.Thread(target=writer)
        thread.start()
        rotate, held = Journal.rotate, [0.0]

        def timed_rotate(journal: Journal) -> Any:  # the one step of a checkpoint under the storage's lock
            began = time.perf_counter()
            try:
                return rotate(journal)
            finally:
                held[0] = max(held[0], time.perf_counter() - began)

        Journal.rotate = timed_rotate  # type: ignore[method-assign]
        try:
            started = time.perf_counter()
            for _ in range(checkpoints):
                storage.checkpoint()
            during = longest[0]
            longest[0] = 0.0
            time.sleep(time.perf_counter() - started)  # as long again without a checkpoint: the machine's noise
            quiet = longest[0]
        finally:
            stop.set()
            thread.join()
            storage.close()
            gc.unfreeze()
            Journal.rotate = rotate  # type: ignore[method-assign]
    return {
        "lock_hold_ms": held[0] * 1000,
        "longest_record_ms": during * 1000,
        "longest_record_ms_without": quiet * 1000,
    }


def durability(rounds: int, seconds: float, quick: bool = False) -> dict:
    return {
        "post_cost": post_cost(rounds, seconds),
        "record_cost": record_cost(),
        "restart": restart_time(10_000, 200_000) if quick else restart_time(),
        "rotation": rotation_hold(),
        "stall": checkpoint_stall(seconds=seconds * 2),
    }


def _ratio_range(cost: dict, name: str) -> str:
    """The run-by-run ratios of ``name`` to no data dir (runs alternate, so run i of each
    faced the same moment of the machine's load), as a range."""
    ratios = [mode / none for mode, none in zip(cost[name]["runs"]["post"], cost["none"]["runs"]["post"], strict=True)]
    return f"runs {min(ratios):.2f}-{max(ratios):.2f}x"


def rows(results: dict) -> list[tuple[str, str, str, bool | None]]:
    cost, found = results["post_cost"], []
    ratio = cost["everysec"]["post"] / cost["none"]["post"]
    found.append(
        (
            "POST req/s: default data dir (fsync everysec) / no data dir (medians)",
            f"{cost['everysec']['post']:,.0f} / {cost['none']['post']:,.0f} = {ratio:.2f}x ({_ratio_range(cost, 'everysec')})",
            ">= 0.95x",
            ratio >= 0.95,
        )
    )
    record = results["record_cost"]
    found.append(
        (
            "record() CPU in-process: with the log (everysec) / without a data dir",
            f"{record['everysec_us']:.2f} / {record['none_us']:.2f} µs",
            "(reported)",
            None,
        )
    )
    always = cost["always"]["post"] / cost["none"]["post"]
    found.append(
        (
            "POST req/s: RINGSUM_FSYNC=always (group commit) / no data dir (medians)",
            f"{cost['always']['post']:,.0f} / {cost['none']['post']:,.0f} = {always:.2f}x ({_ratio_range(cost, 'always')})",
            ">= 0.8x",
            always >= 0.8,
        )
    )
    found.append(
        (
            "POST server CPU µs/request: none / everysec / always (medians)",
            " / ".join(f"{cost[name]['post_cpu_us']:,.0f}" for name in ("none", "everysec", "always")),
            "(reported)",
            None,
        )
    )
    for figures in results["restart"].values():
        found.append(
            (
                f"restart with {figures['keys']:,} keys, {figures['entries']:,} entries: from the log / from a checkpoint",
                f"{figures['from_log_s']:.2f} s / {figures['from_snapshot_s']:.2f} s",
                "(reported)",
                None,
            )
        )
    rotation, stall = results["rotation"], results["stall"]
    found.append(
        (
            "checkpoint of 100,000 keys: lock held / longest record() meanwhile / without checkpoints",
            f"{rotation['lock_hold_ms']:.2f} / {rotation['longest_record_ms']:.1f} / {rotation['longest_record_ms_without']:.1f} ms",
            "a few ms",
            rotation["longest_record_ms"] <= 10,
        )
    )
    found.append(
        (
            "100,000 keys, a checkpoint every 2 s: longest POST, with / without a data dir",
            f"{stall['max_ms_with_checkpoints']:.1f} ms / {stall['max_ms_without']:.1f} ms",
            "(reported)",
            None,
        )
    )
    return found


__all__ = ["durability", "rows"]
