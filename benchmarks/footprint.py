"""How much memory a key and an entry take in memory storage, and how long recording
and summing take, in process.

``python -m benchmarks.footprint keys --key-length 9`` (100,000 keys of one entry),
``busy --keys 1000 [--traced]`` (keys with a value in every tick of the hour),
``entries {tick,exact}`` or ``speed`` prints one JSON line; run each in its own process
so RSS belongs to it alone (``python -m benchmarks --only footprint`` runs them all).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
import timeit
import tracemalloc

from .harness import ROOT
from .memory_bound import HOUR_US, START_US, rss_bytes

KEYS = 100_000
BUSY_TICKS = 3601  # a key posted to every second of a one-hour window in 1 s ticks


def bytes_per_key(key_length: int, keys: int = KEYS) -> dict:
    """RSS growth per live key holding one entry, through MemoryStorage.record_many."""
    from ringsum.config import storage_options
    from ringsum.storage.memory import MemoryStorage

    storage = MemoryStorage(
        storage_options(window_us=3_600_000_000, resolution_us=1_000_000, max_keys=keys + 1), clock=lambda: START_US
    )
    gc.collect()
    tracked, before = len(gc.get_objects()), rss_bytes()
    for start in range(0, keys, 1000):  # each key a new string, as when read from a request
        storage.record_many([(f"key.{index}".rjust(key_length, "k"), 3) for index in range(start, start + 1000)])
    gc.collect()
    held, tracked = rss_bytes() - before, len(gc.get_objects()) - tracked
    storage.close()
    return {"bytes_per_key": held / keys, "tracked_objects_per_key": tracked / keys}


def bytes_per_busy_key(keys: int, traced: bool = False, ticks: int = BUSY_TICKS) -> dict:
    """Bytes per key fed a value in every tick of a 1 h window (1 s ticks: 3,601 held),
    through MemoryStorage.record_many, one batch per tick. Values vary (1,000 to 100,999,
    as real sums do), so none is one of CPython's shared small ints. RSS growth, or with
    ``traced`` the bytes tracemalloc sees allocated (slower, so run on fewer keys).
    Fewer ``ticks`` fill faster: a key that holds a sixth of the window's ticks is
    packed into a ring of them all, whose size no longer depends on how many it holds."""
    from ringsum.config import storage_options
    from ringsum.storage.memory import MemoryStorage

    now = [START_US]
    options = storage_options(window_us=HOUR_US, resolution_us=1_000_000, max_keys=keys + 1)
    storage = MemoryStorage(options, clock=lambda: now[0])
    names = [f"busy.{index:05d}" for index in range(keys)]
    gc.collect()
    if traced:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] if traced else rss_bytes()
    for tick in range(ticks):
        now[0] = START_US + tick * 1_000_000 + 123_456
        storage.record_many([(name, 1000 + (tick * 7919 + index) % 100_000) for index, name in enumerate(names)])
    gc.collect()
    held = (tracemalloc.get_traced_memory()[0] if traced else rss_bytes()) - before
    entries = storage.stats().entries
    storage.close()
    return {"bytes_per_key": held / keys, "entries_per_key": entries / keys, "keys": keys, "traced": traced}


def bytes_per_entry(design: str, entries: int = 1_000_000) -> dict:
    """RSS growth per entry: tick mode (1 s ticks), 300 keys of 3,600 entries each; exact
    mode, one key of a million entries 3.6 ms apart."""
    from ringsum.core.window import RollingSum

    keys, gap_us = (300, 1_000_000) if design == "tick" else (1, HOUR_US // entries)
    sums = [RollingSum(HOUR_US, 1_000_000 if design == "tick" else 0) for _ in range(keys)]
    gc.collect()
    before = rss_bytes()
    now = START_US
    for _ in range(entries // keys):
        now += gap_us
        for rolling in sums:
            rolling.add(3, now)
    held = sum(map(len, sums))
    return {"bytes_per_entry": (rss_bytes() - before) / held, "entries": held}


def add_total_ns() -> dict:
    """add + total per call, evicting as the storage does, in the shapes keys take."""
    from ringsum.core.window import RollingSum

    shapes = {"few_entries": (10_000_000, 1_000_000, 500_000), "tick_full_hour": (HOUR_US, 1_000_000, 1_000_000)}
    shapes["exact_busy"] = (HOUR_US, 0, 1_000)
    found = {}
    for shape, (window_us, resolution_us, gap_us) in shapes.items():
        rolling, now = RollingSum(window_us, resolution_us), [START_US]
        for _ in range(window_us // gap_us + 2):  # a full window first
            now[0] += gap_us
            rolling.evict(now[0])
            rolling.add(3, now[0])

        def step(rolling: RollingSum = rolling, now: list[int] = now, gap_us: int = gap_us) -> None:
            now[0] += gap_us
            rolling.evict(now[0])
            rolling.add(3, now[0])
            rolling.total(now[0])

        found[shape] = min(timeit.repeat(step, timer=time.process_time, number=100_000, repeat=7)) / 100_000 * 1e9
    return found


def measure_all() -> dict:
    """Every figure, each in a fresh process."""
    runs = {
        "per_key": ["keys", "--key-length", "9"],
        "per_key_200_chars": ["keys", "--key-length", "200"],
        "per_busy_key_rss_100": ["busy", "--keys", "100"],
        "per_busy_key_rss_1000": ["busy", "--keys", "1000"],
        "per_busy_key_traced": ["busy", "--keys", "100", "--traced"],
        "per_entry_tick": ["entries", "tick"],
        "per_entry_exact": ["entries", "exact"],
        "add_total_ns": ["speed"],
    }
    return {name: in_fresh_process(*argv) for name, argv in runs.items()}


def in_fresh_process(*argv: str) -> dict:
    """``python -m benchmarks.footprint *argv`` in a process of its own: RSS is its alone."""
    return json.loads(
        subprocess.run(
            [sys.executable, "-m", "benchmarks.footprint", *argv], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.footprint", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    keys = commands.add_parser("keys", help="RSS per key: 100,000 live keys of one entry each")
    keys.add_argument("--key-length", type=int, default=9, help="characters per key name (default 9)")
    keys.add_argument("--keys", type=int, default=KEYS, help=f"keys held (default {KEYS:,})")
    busy = commands.add_parser("busy", help="RSS per busy key: a value in every tick of the hour")
    busy.add_argument("--keys", type=int, default=1000, help="busy keys held (default 1000)")
    busy.add_argument("--traced", action="store_true", help="bytes counted by tracemalloc instead of RSS")
    busy.add_argument("--ticks", type=int, default=BUSY_TICKS, help="ticks fed (default: all 3,601)")
    entries = commands.add_parser("entries", help="RSS per entry: tick mode (rings) or exact mode (1M values)")
    entries.add_argument("design", choices=["tick", "exact"])
    commands.add_parser("speed", help="ns per evict + add + total, in process")
    args = parser.parse_args()
    if args.command == "keys":
        print(json.dumps(bytes_per_key(args.key_length, args.keys)))
    elif args.command == "busy":
        print(json.dumps(bytes_per_busy_key(args.keys, args.traced, args.ticks)))
    elif args.command == "entries":
        print(json.dumps(bytes_per_entry(args.design)))
    else:
        print(json.dumps(add_total_ns()))


if __name__ == "__main__":
    main()
