"""``python -m benchmarks.redis_footprint [--keys N] [--runs R]``: what a metric key costs
in Redis, key layout 1 (ringsum 0.2: a hash and a sorted set per key) against layout 2
(one string: a log while sparse, a ring once busy), and what redis-server spends per write.

- Bytes per key: ``MEMORY USAGE <key> SAMPLES 0`` (every element counted, not sampled)
  summed over a key's structures, for a sparse key (one tick) and a busy key (a 1 h
  window of 1 s ticks with a value in every tick: 3,601 ticks).
- Bytes per busy key all in: redis-server's ``used_memory`` grown by N busy keys, over N
  (the keyspace's own entries, TTLs and the listing index included), and that times
  100,000.
- Server CPU per write, one key per EVALSHA (as a POST): redis-server's CPU per call
  (from /proc) and the script's own time (``INFO commandstats``), writing to a busy key in
  its steady state (each write ages one tick out), creating a key, reading a busy key's
  total.

Layout 1 runs ringsum 0.2's record script itself (tests/fixtures/redis_layout1), layout 2
the storage's own scripts. Both are given the time (as the tests give the app's clock),
so an hour of ticks fills in seconds, on a throwaway redis-server. Each figure is the
median of ``--runs`` runs, with their range. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path

import redis

from .http_load import redis_server
from .redis_cpu import cpu_seconds

HOUR_US, SECOND_US = 3_600_000_000, 1_000_000
TICKS = 3601  # one hour of 1 s ticks, both ends held
T0 = 1_767_225_600_000_000
KEY = "visits.example"  # 14 characters, as a key name of a real deployment might be
LAYOUT_1 = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "redis_layout1"
ONE_HUNDRED_THOUSAND = 100_000


class Layout1:
    """Writes and reads as ringsum 0.2 did (its scripts; reads by its total rule)."""

    name = "layout 1"

    def __init__(self, uri: str, clock: Callable[[], int]) -> None:
        self.client = redis.Redis.from_url(uri)
        text = (LAYOUT_1 / "common.lua").read_text() + "\n" + (LAYOUT_1 / "record.lua").read_text()
        self.record_script = self.client.register_script(text)
        # 0.2's totals.lua, as it was: evict, then HGET total (kept here: tests keep only record.lua)
        self.totals_script = self.client.register_script(
            (LAYOUT_1 / "common.lua").read_text()
            + """
local oldest_kept = floor_div(now_us(), slot_us) - span
local result = { 0 }
for i = 1, #KEYS / 2 do
  local hash = KEYS[2 * i - 1]
  result[1] = result[1] + evict(hash, KEYS[2 * i], oldest_kept)
  result[i + 1] = redis.call('HGET', hash, 'total') or ''
end
return result
"""
        )
        self.clock = clock

    @staticmethod
    def names(key: str) -> list[str]:
        return [f"ringsum:{{{key}}}:h", f"ringsum:{{{key}}}:z"]

    def _head(self) -> list[str]:
        return [str(SECOND_US), str(HOUR_US // SECOND_US), str(self.clock())]

    def record(self, keys: list[str], value: int) -> None:
        names = [name for key in keys for name in self.names(key)]
        self.record_script([*names, "ringsum:index"], [*self._head(), "3601001", "", *[str(value)] * len(keys)])

    def total(self, key: str) -> None:
        self.totals_script(self.names(key), self._head())

    def close(self) -> None:
        self.client.close()


class Layout2:
    """The storage itself, on the given clock."""

    name = "layout 2"

    def __init__(self, uri: str, clock: Callable[[], int]) -> None:
        from ringsum.config import storage_options
        from ringsum.storage.redis import RedisStorage

        options = storage_options(window_us=HOUR_US, resolution_us=SECOND_US, redis_timeout_us=60_000_000)
        self.storage = RedisStorage(uri, options, clock=clock)  # a loaded machine is no outage

    @staticmethod
    def names(key: str) -> list[str]:
        from ringsum.storage.redis_layout import string_key

        return [string_key(key)]

    def record(self, keys: list[str], value: int) -> None:
        self.storage.record_many([(key, value) for key in keys])

    def total(self, key: str) -> None:
        self.storage.total(key)

    def close(self) -> None:
        self.storage.close()


def _per_call_us(client: redis.Redis, pid: int, action: Callable[[], None], calls: int = 5000) -> tuple[float, float]:
    """Over ``calls`` runs of ``action`` (one EVALSHA each): the script's own time per call
    (INFO commandstats), and redis-server's whole CPU per call (/proc: reading the
    command, running it, answering), the steadier figure on a busy machine."""
    client.config_resetstat()
    before = cpu_seconds(pid)
    for _ in range(calls):
        action()
    cpu_us = (cpu_seconds(pid) - before) / calls * 1e6
    stats = client.info("commandstats")["cmdstat_evalsha"]
    return stats["usec"] / stats["calls"], cpu_us


def one_run(uri: str, pid: int, layout_class: type, busy_keys: int) -> dict:
    """Every figure of one layout, on a flushed Redis."""
    # FLUSHALL of layout 1's 200 busy keys (millions of hash fields) outlasts redis-py's
    # default 5 s timeout on a loaded machine.
    client = redis.Redis.from_url(uri, socket_timeout=120)
    client.flushall()
    now = [T0]
    layout = layout_class(uri, lambda: now[0])
    try:
        layout.total("warm-up")  # loads the scripts and, for layout 2, marks the keyspace
        layout.record([f"{KEY}.sparse"], 3)
        sparse = sum(client.memory_usage(name, samples=0) or 0 for name in layout.names(f"{KEY}.sparse"))
        client.flushall()
        layout.total("warm-up")
        base = client.info("memory")["used_memory"]
        keys = [f"{KEY}.{index:06d}" for index in range(busy_keys)]
        for tick in range(TICKS):
            now[0] = T0 + tick * SECOND_US
            layout.record(keys, tick % 11 - 3)
        per_key_all_in = (client.info("memory")["used_memory"] - base) / busy_keys
        busy = sum(client.memory_usage(name, samples=0) or 0 for name in layout.names(keys[0]))

        def busy_write() -> None:
            now[0] += SECOND_US
            layout.record([keys[0]], 1)

        created = iter(range(10**9))
        cpu = {}
        for name, action in (
            ("busy_write", busy_write),
            ("new_key_write", lambda: layout.record([f"new.{next(created)}"], 1)),
            ("busy_read", lambda: layout.total(keys[1])),
        ):
            cpu[f"{name}_us"], cpu[f"{name}_cpu_us"] = _per_call_us(client, pid, action)
    finally:
        layout.close()
        client.close()
    return {"sparse_bytes": sparse, "busy_bytes": busy, "busy_bytes_all_in": per_key_all_in, **cpu}


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(busy_keys: int = 200, runs: int = 3) -> dict:
    """Both layouts, ``runs`` times each, taking turns on one redis-server."""
    found: dict[str, list[dict]] = {"layout_1": [], "layout_2": []}
    with redis_server() as (uri, pid):
        for _ in range(runs):
            for name, layout_class in (("layout_1", Layout1), ("layout_2", Layout2)):
                found[name].append(one_run(uri, pid, layout_class, busy_keys))
    results: dict = {"busy_keys": busy_keys, "runs": runs}
    for name, measured in found.items():
        results[name] = {figure: _summary([run[figure] for run in measured]) for figure in measured[0]}
        all_in = results[name]["busy_bytes_all_in"]["median"]
        results[name]["hundred_thousand_busy_keys_gib"] = all_in * ONE_HUNDRED_THOUSAND / 2**30
    return results


def _range(figure: dict, unit: str = "B", scale: float = 1.0, digits: int = 0) -> str:
    median, low, high = (figure[name] / scale for name in ("median", "min", "max"))
    if f"{low:,.{digits}f}" == f"{high:,.{digits}f}":
        return f"{median:,.{digits}f} {unit}"
    return f"{median:,.{digits}f} {unit} ({low:,.{digits}f}-{high:,.{digits}f})"


def rows(results: dict) -> list[tuple[str, str, str, bool | None]]:
    """The table rows of ``python -m benchmarks``: layout 1 -> layout 2."""
    before, after = results["layout_1"], results["layout_2"]
    busy, sparse = after["busy_bytes"]["median"], after["sparse_bytes"]["median"]
    hundred_k = after["hundred_thousand_busy_keys_gib"]
    rows: list[tuple[str, str, str, bool | None]] = [
        (
            "Redis, bytes per busy key (MEMORY USAGE, 3,601 ticks of 1 s), layout 1 -> 2",
            f"{_range(before['busy_bytes'])} -> {_range(after['busy_bytes'])}",
            "<= 64 KiB",
            busy <= 64 * 1024,
        ),
        (
            "Redis, bytes per sparse key (MEMORY USAGE, one tick), layout 1 -> 2",
            f"{_range(before['sparse_bytes'])} -> {_range(after['sparse_bytes'])}",
            "no worse than layout 1",
            sparse <= before["sparse_bytes"]["median"],
        ),
        (
            f"Redis, used_memory per busy key over {results['busy_keys']:,} keys (all in), layout 1 -> 2; "
            "times 100,000",
            f"{_range(before['busy_bytes_all_in'])} -> {_range(after['busy_bytes_all_in'])}; "
            f"{before['hundred_thousand_busy_keys_gib']:.1f} -> {hundred_k:.2f} GiB",
            "< 5 GiB for 100,000",
            hundred_k < 5,
        ),
    ]
    for figure, label, target in (
        ("busy_write", "write to a busy key", "not much slower"),
        ("new_key_write", "write creating a key", "(reported)"),
        ("busy_read", "total of a busy key", "(reported)"),
    ):
        script, cpu = f"{figure}_us", f"{figure}_cpu_us"
        rows.append(
            (
                f"redis-server per {label} (one key per EVALSHA): CPU / script time, layout 1 -> 2",
                f"{_range(before[cpu], 'µs', digits=1)} / {_range(before[script], 'µs', digits=1)} -> "
                f"{_range(after[cpu], 'µs', digits=1)} / {_range(after[script], 'µs', digits=1)}",
                target if target == "(reported)" else f"{target} (<= 1.25x)",
                after[cpu]["median"] <= 1.25 * before[cpu]["median"] if target != "(reported)" else None,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_footprint", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=200, help="busy keys filled for the all-in figure (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each layout, taking turns (default 3)")
    args = parser.parse_args()
    print(json.dumps(measure(args.keys, args.runs), indent=2))


if __name__ == "__main__":
    main()
