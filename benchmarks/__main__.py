"""``python -m benchmarks [--quick | --tiny] [--only STEPS] [--json PATH] [--save] [--strict]``

Measures how fast ringsum answers and how much memory it takes, as a user runs it:
requests per second for single posts, reads and batches against a bare Flask app
and a naive design, latency while hostile or idle clients hold connections open,
bytes per key and per entry in memory and in Redis, the cost of the write-ahead log,
of restarts and checkpoints, of Idempotency-Key, /metrics and listing, and what
each attack of docs/edge.md's threat model does to other clients. Each figure is
printed in a table beside its target, and written as JSON.

All HTTP figures are ratios to baselines measured in the same run (the machine is
noisy), with runs alternating between the apps compared and the median kept. The
full run measures each figure five times over (--quick: once, at smaller sizes)
and needs wrk, redis-server, nginx and Caddy (apt-get install wrk redis-server
nginx caddy); benchmarks/README.md says what each step measures and how.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import (
    attacks,
    capacity,
    churn,
    durability,
    edge,
    footprint,
    hostile,
    http_load,
    idempotency,
    listing,
    redis_footprint,
    scrape,
)

ROOT = Path(__file__).resolve().parent.parent
Row = tuple[str, str, str, bool | None]  # figure, measured, target, met


def _memory_bound(seconds: int) -> dict:
    results = {}
    for design in ("tick", "exact", "naive"):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory_bound", design, "--seconds", str(seconds)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        results[design] = json.loads(out)
    return results


def _rows(results: dict) -> list[Row]:
    rows: list[Row] = []
    if single := results.get("single_posts"):
        ring, bare, naive_g = single["ringsum"], single["bare"], single["naive_gunicorn"]
        for method in ("post", "get"):
            floor = ring[method] / bare[method]
            rows.append(
                (
                    f"{method.upper()} req/s: ringsum / bare Flask floor",
                    f"{ring[method]:,.0f} / {bare[method]:,.0f} = {floor:.2f}x",
                    ">= 0.9x",
                    floor >= 0.9,
                )
            )
        for method in ("post", "get"):
            cpu = f"{method}_cpu_us"
            if cpu in ring:
                ratio = ring[cpu] / bare[cpu]
                rows.append(
                    (
                        f"{method.upper()} server CPU us/request: ringsum / bare Flask floor",
                        f"{ring[cpu]:,.0f} / {bare[cpu]:,.0f} = {ratio:.2f}x",
                        "(reference: lower is better)",
                        None,
                    )
                )
        for method in ("post", "get"):
            ratio = ring[method] / naive_g[method]
            rows.append(
                (
                    f"{method.upper()} req/s: ringsum / naive on gunicorn sync",
                    f"{ring[method]:,.0f} / {naive_g[method]:,.0f} = {ratio:.1f}x",
                    ">= 2.5x",
                    ratio >= 2.5,
                )
            )
        for method in ("post", "get"):
            if "bare_edge" in single:
                ratio = single["bare_edge"][method] / bare[method]
                rows.append(
                    (
                        f"{method.upper()} req/s: bare Flask on ringsum's edge / on granian",
                        f"{single['bare_edge'][method]:,.0f} / {bare[method]:,.0f} = {ratio:.2f}x",
                        "(reference)",
                        None,
                    )
                )
            rows.append(
                (
                    f"{method.upper()} req/s: naive design on granian",
                    f"{single['naive'][method]:,.0f}",
                    "(reference)",
                    None,
                )
            )
    if access := results.get("access_log"):
        for method in ("post", "get"):
            cpu, ratio = f"{method}_cpu_us", access[f"{method}_cpu_ratio"]
            rows.append(
                (
                    f"{method.upper()} server CPU us/request: RINGSUM_ACCESS_LOG=text / off",
                    f"{access['text'][cpu]:,.1f} / {access['off'][cpu]:,.1f} = {ratio:.3f}x",
                    "<= 1.05x",
                    ratio <= 1.05,
                )
            )
        if "line_us" in access:
            for method in ("post", "get"):
                rows.append(
                    (
                        f"{method.upper()}: one access line (in process) / server CPU per request with the log off",
                        f"{access['line_us']:.2f} / {access['off'][f'{method}_cpu_us']:,.1f} us "
                        f"= +{access[f'{method}_line_ratio'] - 1:.1%}",
                        "<= +5%",
                        access[f"{method}_line_ratio"] <= 1.05,
                    )
                )
    if clients := results.get("hostile_clients"):
        base = clients["none"]
        labels = {
            "stalled_bodies_64": "64 stalled bodies held open",
            "slow_headers_200": "200 slow-header sockets held open",
            "idle_3000": "3,000 idle connections held open",
        }
        for case, label in labels.items():
            found = clients[case]
            rows.append(
                (
                    f"probe GET p50 / max: {label} (none held: {base['p50_ms']:.2f} / {base['max_ms']:.1f} ms)",
                    f"{found['p50_ms']:.2f} / {found['max_ms']:.1f} ms, {found['bad']} failed",
                    "p50 <= 5 ms, max <= 100 ms",
                    found["p50_ms"] <= 5 and found["max_ms"] <= 100 and found["bad"] == 0,
                )
            )
    if batch := results.get("batch_ingest"):
        base = results.get("single_posts", {}).get("ringsum", {}).get("post")
        ratio = batch["values_per_s"] / base if base else float("nan")
        rows.append(
            (
                "batch ingest values/s (1,000 per batch) / single-post values/s",
                f"{batch['values_per_s']:,.0f} = {ratio:.0f}x" if base else f"{batch['values_per_s']:,.0f}",
                ">= 40x",
                ratio >= 40 if base else None,
            )
        )
    if memory := results.get("memory_bound"):
        for design, figures in memory.items():
            growth = figures["rss_growth_bytes"] / 1e6
            met = figures["entries"] <= 3601 and growth <= 2 if design == "tick" else None
            target = "<= 3,601 entries, <= 2 MB" if design == "tick" else "(reported)"
            rows.append(
                (
                    f"memory, one key, {figures['events']:,} events at 10,000/s: {design}",
                    f"{figures['entries']:,} entries, {growth:,.1f} MB RSS",
                    target,
                    met,
                )
            )
    if flat := results.get("flat_reads"):
        many = flat["events"]  # fewer with --quick
        rows.append(
            (
                f"GET /sum p50: {many:,} vs 10 events in window",
                f"{flat[f'p50_ms_{many}_events']:.3f} / {flat['p50_ms_10_events']:.3f} ms = {flat['ratio']:.2f}",
                "<= 1.2",
                flat["ratio"] <= 1.2,
            )
        )
    if scale := results.get("keys_at_scale"):
        many = f"{scale['keys']:,} keys"  # fewer with --tiny
        rows.append((f"{many} live: RSS per key", f"{scale['rss_bytes_per_key']:,.0f} B", "(reported)", None))
        rows.append(
            (
                f"{many}: GET latency through their sweeps and mass expiry, p50 / p99 / max",
                f"{scale['p50_ms']:.2f} / {scale['p99_ms']:.2f} / {scale['max_ms']:.1f} ms",
                "(reported)",
                None,
            )
        )
        rows.append(
            (
                f"{many}: longest garbage-collector pause in the server (whole run)",
                f"{scale['longest_gc_pause_ms']:.1f} ms",
                "(reported)",
                None,
            )
        )
    if sweep := results.get("sweep"):
        many = f"{sweep['keys']:,} keys"  # fewer with --tiny
        rows.append(
            (
                f"{many}: one sweep, all live / all expiring at once",
                f"{sweep['sweep_ms_live']:.2f} ms / {sweep['sweep_ms_all_expired']:.0f} ms",
                "(reported)",
                None,
            )
        )
        rows.append(
            (
                f"sweep stall: longest lock hold while {many} expire at once",
                f"{sweep['longest_lock_hold_ms']:.2f} ms",
                "<= 50 ms",
                sweep["longest_lock_hold_ms"] <= 50,
            )
        )
    rows += _footprint_rows(results)
    if "redis_footprint" in results:
        rows += redis_footprint.rows(results["redis_footprint"])
    if redis := results.get("redis"):
        for method in ("post", "get"):
            ratio = redis["redis"][method] / redis["memory"][method]
            rows.append(
                (
                    f"{method.upper()} req/s: Redis --workers 2 / memory",
                    f"{redis['redis'][method]:,.0f} / {redis['memory'][method]:,.0f} = {ratio:.2f}x",
                    ">= 0.8x",
                    ratio >= 0.8,
                )
            )
    if refusals := results.get("hostile"):
        rows.extend(hostile.rows(refusals))
    rows += _listing_rows(results.get("listing"))
    if "durability" in results:
        rows += durability.rows(results["durability"])
    if keyed := results.get("idempotency"):
        rows.extend(idempotency.rows(keyed))
    if scraped := results.get("scrape"):
        rows.extend(scrape.rows(scraped))
    if hostile_table := results.get("attacks"):
        rows.extend(attacks.rows(hostile_table))
    if sized := results.get("capacity"):
        rows.extend(capacity.rows(sized))
    return rows


def _footprint_rows(results: dict) -> list[Row]:
    rows: list[Row] = []
    if sizes := results.get("footprint"):
        short, long = sizes["per_key"], sizes["per_key_200_chars"]
        rows.append(
            (
                "sparse key: 100,000 live keys, one entry each: RSS per key, 9-char / 200-char keys",
                f"{short['bytes_per_key']:,.0f} / {long['bytes_per_key']:,.0f} B "
                f"({short['tracked_objects_per_key']:.0f} GC-tracked objects per key)",
                "<= 400 B (9-char keys)",
                short["bytes_per_key"] <= 400,
            )
        )
        if "per_busy_key_traced" in sizes:
            rss_100, rss_1000 = sizes["per_busy_key_rss_100"], sizes["per_busy_key_rss_1000"]
            traced = sizes["per_busy_key_traced"]["bytes_per_key"]
            rows.append(
                (
                    "busy key (3,601 ticks held): RSS per key over 1,000 / 100 keys (traced, 100 keys)",
                    f"{rss_1000['bytes_per_key'] / 1024:,.1f} / {rss_100['bytes_per_key'] / 1024:,.1f} KiB "
                    f"({traced / 1024:,.1f} KiB)",
                    "<= 48 KiB RSS over 1,000 keys, ~30 KiB traced (was 286 / 280 KiB (284))",
                    rss_1000["bytes_per_key"] <= 48 * 1024,
                )
            )
        tick, exact = sizes["per_entry_tick"]["bytes_per_entry"], sizes["per_entry_exact"]["bytes_per_entry"]
        rows.append(
            (
                "RSS per entry, tick (300 keys of 3,600 ticks: rings) / exact mode (one key of 1M values)",
                f"{tick:.1f} / {exact:.1f} B",
                "(reported; was 49 / 49 B)",
                None,
            )
        )
        speed = sizes["add_total_ns"]
        rows.append(
            (
                "evict + add + total per call, in-process: few entries / full-hour tick / busy exact",
                " / ".join(f"{speed[shape]:.0f}" for shape in ("few_entries", "tick_full_hour", "exact_busy")) + " ns",
                "(reported)",
                None,
            )
        )
    if churned := results.get("churn"):
        hold = churned["longest_lock_hold_ms"]
        for label, run in (("without", churned["without_policy"]), ("with", churned["with_policy"])):
            met = run["max_ms"] <= hold + 10 if label == "with" else None
            rows.append(
                (
                    f"probe GET while 100,000 keys churn ({run['posted_per_s']:,.0f} events/s), {label} "
                    "GC policy: p50 / p99 / max",
                    f"{run['p50_ms']:.2f} / {run['p99_ms']:.1f} / {run['max_ms']:.1f} ms",
                    f"max <= longest lock hold + 10 ms = {hold + 10:.0f} ms" if met is not None else "(before)",
                    met,
                )
            )
        rows.append(
            (
                "churn: longest garbage-collector pause, without / with GC policy",
                f"{churned['without_policy']['longest_gc_pause_ms']:.1f} / "
                f"{churned['with_policy']['longest_gc_pause_ms']:.1f} ms",
                "<= 10 ms with",
                churned["with_policy"]["longest_gc_pause_ms"] <= 10,
            )
        )
        rows.append(
            ("churn: longest lock hold, one 1,000-event batch over 100,000 keys", f"{hold:.1f} ms", "(reported)", None)
        )
    return rows


def _listing_rows(found: dict | None) -> list[Row]:
    if not found:
        return []
    memory, redis, index = found["memory"], found["redis"], found["index"]
    rows: list[Row] = []
    under_lock = [index[f"keys_limit_{limit}_us"] / 1000 for limit in (1, 100, 10_000)]
    rows.append(
        (
            "200,000 keys, memory: keys() in-process (one lock hold per 500 keys), limit 1 / 100 / 10000",
            "{:.3f} / {:.3f} / {:.1f} ms".format(*under_lock),
            "<= 2 ms for 1 and 100",
            max(under_lock[:2]) <= 2,
        )
    )
    pages = " / ".join(f"{memory[f'limit_{limit}']['p50_ms']:.2f}" for limit in (1, 100, 10_000))
    rows.append(
        (
            "100,000 keys, memory: GET /metric?limit=1 / 100 / 10000 p50 (GET /sum p50, same run)",
            f"{pages} ms ({memory['probe_alone']['p50_ms']:.2f} ms)",
            "(reported)",
            None,
        )
    )
    probe, alone = memory["probe_while_listing_10000"], memory["probe_alone"]
    rows.append(
        (
            "100,000 keys, memory: probe GET /sum p50 / max, alone vs while limit=10000 lists nonstop",
            f"{alone['p50_ms']:.2f} / {alone['max_ms']:.1f} vs {probe['p50_ms']:.2f} / {probe['max_ms']:.1f} ms",
            "(reported)",
            None,
        )
    )
    rows.append(
        (
            "memory: index upkeep per new key / whole record of a new key (in-process)",
            f"{index['index_add_us']:.1f} / {index['record_new_key_us']:.1f} µs = {index['share']:.0%}",
            "(reported)",
            None,
        )
    )
    for figure, name, before in (("GET /metric?limit=1", "limit_1", 255), ("GET /metrics", "metrics_scrape", 910)):
        p50 = redis[name]["p50_ms"]
        rows.append(
            (f"100,000 keys, Redis: {figure} p50", f"{p50:.2f} ms", f"no walk of every key (was {before} ms)", None)
        )
    return rows


def _table(rows: list[Row]) -> str:
    lines = ["| figure | measured | target | met |", "| --- | --- | --- | --- |"]
    for figure, measured, target, met in rows:
        lines.append(f"| {figure} | {measured} | {target} | {'-' if met is None else 'yes' if met else '**no**'} |")
    return "\n".join(lines)


RESULTS = ROOT / "benchmarks" / "results"  # untracked (.gitignore): each run's own results
SAVED = ROOT / "benchmarks" / "results.json"  # tracked: the run the README and docs quote, written with --save


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(__doc__ or "").split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help="one short round per figure at smaller sizes (minutes, not the better part of an hour): "
        "to see the harness work; its figures are not the ones to quote",
    )
    size.add_argument(
        "--tiny",
        action="store_true",
        help="seconds per step at tiny sizes, what the test suite runs (tests/test_benchmarks.py): "
        "checks the steps and the table end to end; the figures mean nothing",
    )
    parser.add_argument(
        "--only", default="", metavar="STEPS", help=f"comma-separated steps, of: {','.join(STEPS)} (default: all)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--json",
        default=str(RESULTS / "latest.json"),
        help="where to write the results (default benchmarks/results/latest.json, which git ignores)",
    )
    parser.add_argument(
        "--save",
        action="store_true",
        help="also write them to benchmarks/results.json, the tracked results the README quotes",
    )
    return parser


# The steps, in the order they run: --only names them; each gives one key of the results.
STEPS = (
    "single",
    "access_log",
    "edge",
    "batch",
    "memory",
    "flat",
    "scale",
    "sweep",
    "redis",
    "hostile",
    "footprint",
    "redis_footprint",
    "churn",
    "listing",
    "durability",
    "idempotency",
    "scrape",
    "attacks",
    "capacity",
)


def _steps(size: str) -> dict[str, tuple[str, Callable[[], dict]]]:
    """Each step's results key and how it runs at ``size`` (full, quick or tiny)."""

    def pick(full: Any, quick: Any, tiny: Any) -> Any:
        return {"full": full, "quick": quick, "tiny": tiny}[size]

    rounds, seconds = pick((5, 3), (1, 1), (1, 1))
    quick = size != "full"
    return {
        "single": ("single_posts", lambda: http_load.single_posts(rounds, seconds)),
        "access_log": ("access_log", lambda: http_load.access_log_cost(rounds, seconds)),
        "edge": ("hostile_clients", lambda: edge.hostile_clients(rounds, seconds)),
        "batch": ("batch_ingest", lambda: http_load.batch_ingest(rounds, seconds)),
        "memory": ("memory_bound", lambda: _memory_bound(pick(3600, 360, 2))),
        "flat": ("flat_reads", lambda: http_load.flat_reads(rounds, seconds, pick(1_000_000, 100_000, 1_000))),
        "scale": (
            "keys_at_scale",
            lambda: http_load.keys_at_scale(pick(100_000, 100_000, 1_000), window_s=pick(10, 10, 1)),
        ),
        "sweep": ("sweep", lambda: http_load.sweep_duration(pick(100_000, 100_000, 1_000))),
        "redis": ("redis", lambda: http_load.redis_vs_memory(rounds, seconds)),
        "hostile": ("hostile", lambda: hostile.run(quick)),
        "footprint": ("footprint", footprint.measure_all),
        "redis_footprint": (
            "redis_footprint",
            lambda: redis_footprint.measure(busy_keys=pick(200, 20, 2), runs=pick(3, 1, 1)),
        ),
        "churn": ("churn", lambda: churn.churn_with_and_without_policy(pick(20, 5, 1))),
        "listing": (
            "listing",
            lambda: {
                "memory": listing.memory_listing(),
                "redis": listing.redis_listing(),
                "index": listing.index_cost(),
            },
        ),
        "durability": ("durability", lambda: durability.durability(rounds, seconds, quick)),
        "idempotency": ("idempotency", lambda: idempotency.costs(rounds, seconds)),
        "scrape": (
            "scrape",
            lambda: {"memory": scrape.memory_scrapes(), "redis": scrape.redis_scrapes(), "hook": scrape.hook_cost()},
        ),
        "attacks": ("attacks", lambda: attacks.run(pick(3, 1, 1), quick)),
        "capacity": ("capacity", lambda: capacity.measure(quick)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(STEPS)
    if unknown := [name for name in chosen if name not in STEPS]:
        parser.error(f"no step {', '.join(unknown)}: --only takes {','.join(STEPS)}")
    steps = _steps("tiny" if args.tiny else "quick" if args.quick else "full")
    output = Path(args.json)
    output.parent.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}",
        "command": " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    for name in chosen:
        key, run = steps[name]
        print(f"running {key} ...", end=" ", file=sys.stderr, flush=True)
        started = time.monotonic()
        results[key] = run()
        print(f"{time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        output.write_text(json.dumps(results, indent=2) + "\n")  # a later failure loses no step
    rows = _rows(results)
    results["table"] = _table(rows)
    print(f"\n{results['machine']}\n{results['command']}\n")
    print(results["table"])
    if sized := results.get("capacity"):
        print(f"\n{sized['model']}")  # docs/capacity.md's sizing table
    written = [output, SAVED] if args.save else [output]
    for path in written:
        path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {', '.join(str(path) for path in written)}", file=sys.stderr)
    return 1 if args.strict and any(met is False for *_, met in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
