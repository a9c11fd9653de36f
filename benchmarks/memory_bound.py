"""How much one key holds when fed 10,000 events a second for a whole window: entries
held and RSS growth, in tick mode, in exact mode and in the naive design (a deque of
``(datetime, value)``).

``python -m benchmarks.memory_bound {tick,exact,naive} --rate 10000 --seconds 3600``
prints one JSON line. Each design runs in its own process so RSS belongs to it alone.
The clock is simulated: an hour of events takes seconds, not an hour.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections import deque
from datetime import datetime, timedelta
from pathlib import Path

from ringsum.core.window import RollingSum

HOUR_US = 3_600_000_000
START_US = 1_800_000_000_000_000  # an arbitrary epoch instant, in µs


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def feed_rolling(resolution_us: int, events: int, gap_us: int) -> int:
    """As the memory storage does on each record: age out, then add."""
    rolling = RollingSum(HOUR_US, resolution_us)
    evict, add = rolling.evict, rolling.add
    now = START_US
    for _ in range(events):
        now += gap_us
        evict(now)
        add(3, now)
    globals()["_kept"] = rolling  # keep it alive while RSS is read
    return len(rolling)


def feed_naive(events: int, gap_us: int) -> int:
    """The seed design: every event kept as (datetime, value) until a read sweeps it."""
    queue: deque[tuple[datetime, int]] = deque()
    now = datetime.fromtimestamp(START_US / 1e6)
    gap = timedelta(microseconds=gap_us)
    for _ in range(events):
        now += gap
        queue.append((now, 3))
    cutoff = now - timedelta(hours=1)
    while queue and queue[0][0] < cutoff:
        queue.popleft()
    globals()["_kept"] = queue
    return len(queue)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.memory_bound",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("design", choices=["tick", "exact", "naive"], help="how the key holds its values")
    parser.add_argument("--rate", type=int, default=10_000, help="events per simulated second")
    parser.add_argument("--seconds", type=int, default=3600, help="simulated seconds fed")
    args = parser.parse_args()
    events, gap_us = args.rate * args.seconds, 1_000_000 // args.rate
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    if args.design == "naive":
        entries = feed_naive(events, gap_us)
    else:
        entries = feed_rolling(1_000_000 if args.design == "tick" else 0, events, gap_us)
    gc.collect()
    print(
        json.dumps(
            {
                "design": args.design,
                "events": events,
                "entries": entries,
                "rss_growth_bytes": rss_bytes() - before,
                "wall_seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
