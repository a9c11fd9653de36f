"""``python -m benchmarks.capacity [--quick] [--no-slices]``: the figures docs/capacity.md
sizes a deployment from, the model's answer (``capacity_model.py``) for 1M keys at 100k
and at 1M values/s, and the biggest slices of that this machine holds, measured next to
what the model predicts for them. Prints the doc's tables; ``--json`` writes the figures.

- **Bytes per key**, sparse (one tick) and busy (a value in each of 3,601 ticks: a 1 h
  window of 1 s ticks), all in: memory storage's RSS (``footprint.py``, each in a fresh
  process), Redis's ``used_memory`` grown by N keys, written by the storage's own
  scripts (``redis_footprint.py``). Bytes per tick follow from the two, so a tick that
  grows (a count beside each subtotal) changes the model on the next run.
- **CPU per value**, on ``python app.py`` with one worker: single POSTs to one key (wrk),
  and batches of 1,000 events over 1,000 keys (two clients). With a short window
  (``RINGSUM_WINDOW=36s RINGSUM_RESOLUTION=100ms``) and a warm-up, every key is busy (a
  ring; on Redis checked in the key itself) and ticks age out as a busy key's do in a
  1 h window of 1 s ticks; a value opens a tick while batches come at under 10 a second
  (docs/capacity.md says how many merged). Measured from /proc: ringsum's processes,
  and redis-server's (every Cluster node summed); Redis commands per value from
  ``INFO commandstats``. Memory storage, one Redis, a 3-primary Cluster.
- **Slices** (not with ``--no-slices``; about 30 minutes on a loaded 2-core machine): 1M
  sparse keys on a served memory storage (RSS) and on Redis (``used_memory``), each then driven with batches to
  random keys among the million; 100,000 busy keys in memory storage and in Redis, fed
  through the storages with a simulated clock (a key packs into a ring of every tick of
  the window once it holds a sixth (memory) or an eighth (Redis) of them, and the ring's
  size does not depend on how many it holds, so 455-620 ticks make it as big as 3,601).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import requests

from . import capacity_model
from .capacity_model import Figures
from .footprint import in_fresh_process
from .harness import Server, ringsum_server, wrk
from .http_load import redis_server
from .redis_cpu import cpu_seconds
from .redis_footprint import T0, Layout2, one_run

SECOND_US = 1_000_000
# 361 ticks in 36 s: a key is a ring (memory: past 60 ticks held, Redis: past 45) within seconds
# at any rate this machine reaches, and each batch at under 10 a second opens a tick.
SHORT_WINDOW = {"RINGSUM_WINDOW": "36s", "RINGSUM_RESOLUTION": "100ms"}
BATCH = 1000
BUSY_KEY = "busy.0000"
# INFO commandstats entries that are not a write's own work (the script call itself, and
# what clients and this benchmark ask on the side).
_NOT_WRITE_WORK = ("evalsha", "eval", "script", "info", "config", "ping", "hello", "client", "cluster", "command")
Row = tuple[str, str, str, bool | None]


# -- bytes per key ---------------------------------------------------------------------


def redis_fill(uri: str, keys: int, ticks: int = 1, prefix: str = "s.", threads: int = 1) -> dict:
    """``used_memory`` grown per key by ``keys`` keys fed ``ticks`` ticks of 1 s (1 h
    window) through the storage's record script, 1,000 keys a script, on a flushed Redis;
    and ``MEMORY USAGE`` of one of them. ``threads`` feed disjoint keys at once (Redis
    runs one script at a time: this only hides the round trips)."""
    from ringsum.storage.redis_layout import string_key

    client = redis.Redis.from_url(uri)
    client.flushall()
    Layout2(uri, lambda: T0).total("warm-up")  # the layout marker and the scripts, not counted
    base, started = client.info("memory")["used_memory"], time.monotonic()
    names = [f"{prefix}{index:07d}" for index in range(keys)]

    def feed(part: list[str]) -> None:
        now = [T0]
        layout = Layout2(uri, lambda: now[0])
        try:
            for tick in range(ticks):
                now[0] = T0 + tick * SECOND_US
                for start in range(0, len(part), BATCH):
                    layout.record(part[start : start + BATCH], 1000 + tick % 97)
        finally:
            layout.close()

    workers = [threading.Thread(target=feed, args=(names[index::threads],)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    held = client.info("memory")["used_memory"] - base
    one = client.memory_usage(string_key(names[0]), samples=0)
    client.close()
    return {"keys": keys, "ticks": ticks, "bytes_per_key": held / keys, "memory_usage_one_key": one,
            "seconds": time.monotonic() - started}  # fmt: skip


def footprints(quick: bool) -> dict:
    """Bytes per sparse and busy key, both storages; the Redis figures with redis-server's
    CPU per single-key script (``redis_footprint.one_run``)."""
    memory_sparse = in_fresh_process("keys", "--key-length", "9")
    memory_busy = in_fresh_process("busy", "--keys", "100" if quick else "1000")
    with redis_server() as (uri, pid):
        redis_busy = one_run(uri, pid, Layout2, busy_keys=20 if quick else 200)
        redis_sparse = redis_fill(uri, 10_000 if quick else 100_000)
    return {
        "memory_sparse": memory_sparse,
        "memory_busy": memory_busy,
        "redis_sparse": redis_sparse,
        "redis_busy": {**redis_busy, "keys": 20 if quick else 200},
    }


# -- CPU per value over HTTP -----------------------------------------------------------


def _batch_body() -> str:
    return json.dumps([{"key": f"busy.{index:04d}", "value": 1 + index % 7} for index in range(BATCH)])


@contextmanager
def _cluster() -> Iterator[tuple[str, list[tuple[redis.Redis, int]]]]:
    """A 3-primary Redis Cluster on free ports (the tests' own, ``tests/redis_servers.py``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from redis_servers import RedisClusterServers

    with tempfile.TemporaryDirectory(prefix="ringsum-bench-cluster-") as directory:
        cluster = RedisClusterServers(Path(directory))
        cluster.start()
        try:
            yield cluster.url, [(node.client(), node.process.pid) for node in cluster.nodes]
        finally:
            cluster.stop()


def _is_ring(nodes: list[tuple[redis.Redis, int]], key: str) -> bool:
    from ringsum.storage.redis_layout import HEADER_SIZE, header, string_key

    for client, _ in nodes:
        try:
            string = client.getrange(string_key(key), 0, HEADER_SIZE - 1)
            return len(string) == HEADER_SIZE and header(string).form == b"R"
        except redis.ResponseError:  # MOVED: another Cluster node holds it
            continue
    return False


def _driven(
    server: Server, nodes: list[tuple[redis.Redis, int]], path: str, body: str | None, per_request: int, *,
    connections: int, seconds: float, rounds: int, lua: str = "",
) -> dict:  # fmt: skip
    """Medians over ``rounds`` runs: values/s, ringsum's and redis-server's CPU per value,
    Redis commands per value and scripts per request. Single POSTs are driven by wrk;
    batches (``per_request`` > 1, slow enough that wrk's requests still in flight at its
    end would weigh) by ``_posted``, whose count covers every request the CPU went to."""
    runs: list[dict[str, float]] = []
    for _ in range(rounds):
        for client, _ in nodes:
            client.config_resetstat()
        app_before, redis_before = server.cpu_seconds(), sum(cpu_seconds(pid) for _, pid in nodes)
        started = time.monotonic()
        if per_request > 1 and not lua:
            answered, refused = _posted(f"{server.url}{path}", body or "", connections, seconds)
        else:
            load = wrk(f"{server.url}{path}", seconds=seconds, connections=connections, body=body, lua=lua)
            answered, refused = load.requests - load.bad, load.bad
        elapsed = time.monotonic() - started
        app_s, redis_s = server.cpu_seconds() - app_before, sum(cpu_seconds(pid) for _, pid in nodes) - redis_before
        values = max(answered, 1) * per_request
        stats = [client.info("commandstats") for client, _ in nodes]
        commands = sum(
            figures["calls"]
            for stat in stats
            for name, figures in stat.items()
            if not name.removeprefix("cmdstat_").startswith(_NOT_WRITE_WORK)
        )
        scripts = sum(stat.get("cmdstat_evalsha", {}).get("calls", 0) for stat in stats)
        runs.append(
            {
                "values_per_s": values / elapsed,
                "app_us": app_s * 1e6 / values,
                "redis_us": redis_s * 1e6 / values,
                "redis_commands_per_value": commands / values,
                "scripts_per_request": scripts / max(answered, 1),
                "refused_requests": refused,
            }
        )
    found = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    return {**found, "runs": runs}


def _posted(url: str, body: str, connections: int, seconds: float) -> tuple[int, int]:
    """POST ``body`` to ``url`` on ``connections`` keep-alive connections for ``seconds``;
    each finishes the request it is in. Requests answered 200, and refused."""
    counts = [[0, 0] for _ in range(connections)]
    deadline = time.monotonic() + seconds

    def post(count: list[int]) -> None:
        with requests.Session() as session:
            while time.monotonic() < deadline:
                answer = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=120)
                count[0 if answer.status_code == 200 else 1] += 1

    workers = [threading.Thread(target=post, args=(count,)) for count in counts]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(count[0] for count in counts), sum(count[1] for count in counts)


def _warm(server: Server, nodes: list[tuple[redis.Redis, int]], path: str, body: str, connections: int,
          quick: bool) -> float:  # fmt: skip
    """Drive until the keys are busy rings (Redis: seen in the key; memory: 10 s, past
    the 6 s it takes at this machine's slowest); the seconds it took."""
    started = time.monotonic()
    for _ in range(1 if quick else 8):
        wrk(f"{server.url}{path}", seconds=1 if quick else 5, connections=connections, body=body)
        if quick or (nodes and _is_ring(nodes, BUSY_KEY)) or (not nodes and time.monotonic() - started >= 10):
            break
    warmed = time.monotonic() - started
    time.sleep(0.5 if quick else 3)  # requests wrk left in flight finish before counting starts
    return warmed


def per_value_cpu(quick: bool) -> dict:
    """ringsum's and redis-server's CPU per value: memory, one Redis, a Cluster; single
    posts and batches, each on a fresh server (one worker) with the short window."""
    rounds, seconds = (1, 1) if quick else (3, 5)
    single = (f"/metric/{BUSY_KEY}", '{"value": 3}', 1, 16)
    batch = ("/metric", _batch_body(), BATCH, 4)
    found: dict[str, dict] = {}

    def measure(name: str, env: dict[str, str], nodes: list[tuple[redis.Redis, int]]) -> None:
        for shape, (path, body, per_request, connections) in (("single", single), ("batch", batch)):
            for client, _ in nodes:
                client.flushall()
            with ringsum_server(env={**SHORT_WINDOW, **env}) as server:
                warm_s = _warm(server, nodes, path, body, connections, quick)
                figures = _driven(
                    server, nodes, path, body, per_request, connections=connections, seconds=seconds, rounds=rounds
                )
                ring = _is_ring(nodes, BUSY_KEY) if nodes else None
                found[f"{name}_{shape}"] = {**figures, "warm_up_s": warm_s, "redis_key_is_ring": ring}

    measure("memory", {}, [])
    with redis_server() as (uri, pid):
        client = redis.Redis.from_url(uri)
        measure("redis", {"RINGSUM_STORAGE_URI": uri}, [(client, pid)])
        client.close()
    with _cluster() as (uri, nodes):
        measure("cluster", {"RINGSUM_STORAGE_URI": uri}, nodes)
    return found


# -- the model's inputs ----------------------------------------------------------------


def figures_from(measured: dict) -> Figures:
    """The model's inputs out of ``measure``'s results."""
    sizes, cpu = measured["footprint"], measured["cpu"]

    def shapes(storage: str, figure: str) -> dict[str, float]:
        return {shape: cpu[f"{storage}_{shape}"][figure] for shape in ("single", "batch")}

    return Figures(
        memory_sparse_bytes=sizes["memory_sparse"]["bytes_per_key"],
        memory_busy_bytes=sizes["memory_busy"]["bytes_per_key"],
        redis_sparse_bytes=sizes["redis_sparse"]["bytes_per_key"],
        redis_busy_bytes=sizes["redis_busy"]["busy_bytes_all_in"],
        memory_app_us=shapes("memory", "app_us"),
        redis_app_us=shapes("redis", "app_us"),
        redis_server_us=shapes("redis", "redis_us"),
        cluster_app_us=shapes("cluster", "app_us"),
        cluster_server_us=shapes("cluster", "redis_us"),
    )


# -- slices ----------------------------------------------------------------------------

# A batch of 1,000 events to random keys among ``keys`` (the slice's), made by wrk itself.
_RANDOM_BATCH = """
local keys = {keys}
wrk.method = 'POST'
wrk.headers['Content-Type'] = 'application/json'
request = function()
  local events = {{}}
  for i = 1, {batch} do
    events[i] = string.format('{{"key":"s.%07d","value":3}}', math.random(0, keys - 1))
  end
  return wrk.format(nil, '/metric', nil, '[' .. table.concat(events, ',') .. ']')
end
"""


def _fill_served(server: Server, keys: int) -> float:
    """``keys`` new keys, one value each, POSTed in batches of 1,000; the seconds it took."""
    started = time.monotonic()
    with requests.Session() as session:
        for start in range(0, keys, BATCH):
            body = json.dumps([{"key": f"s.{index:07d}", "value": 3} for index in range(start, start + BATCH)])
            session.post(f"{server.url}/metric", data=body, timeout=60).raise_for_status()
    return time.monotonic() - started


def served_sparse_slice(keys: int, seconds: float, redis_uri_pid: tuple[str, int] | None = None) -> dict:
    """``keys`` sparse keys on a served ringsum (1 h window, one worker): what they hold
    (the worker's RSS, or Redis's ``used_memory``), then wrk batches to random keys among
    them: values/s and CPU per value."""
    env = {"RINGSUM_MAX_KEYS": str(keys + BATCH), "RINGSUM_REDIS_TIMEOUT": "10s"}
    nodes: list[tuple[redis.Redis, int]] = []
    if redis_uri_pid:
        env["RINGSUM_STORAGE_URI"] = redis_uri_pid[0]
        nodes = [(redis.Redis.from_url(redis_uri_pid[0]), redis_uri_pid[1])]
        nodes[0][0].flushall()
    with ringsum_server(env=env) as server:
        time.sleep(1.5)  # start-up allocations settle before the baseline
        before = nodes[0][0].info("memory")["used_memory"] if nodes else server.worker_rss_bytes()
        fill_s = _fill_served(server, keys)
        after = nodes[0][0].info("memory")["used_memory"] if nodes else server.worker_rss_bytes()
        lua = _RANDOM_BATCH.format(keys=keys, batch=BATCH)
        driven = _driven(server, nodes, "/metric", None, BATCH, connections=4, seconds=seconds, rounds=1, lua=lua)
    for client, _ in nodes:
        client.close()
    return {"keys": keys, "bytes_per_key": (after - before) / keys, "fill_s": fill_s, **driven}


def slices(quick: bool) -> dict:
    """The biggest slices of the scenarios this machine holds (smaller with ``quick``)."""
    sparse_keys, busy_keys = (20_000, 2_000) if quick else (1_000_000, 100_000)
    found: dict[str, dict] = {}
    started = time.monotonic()
    found["memory_sparse"] = served_sparse_slice(sparse_keys, 1 if quick else 5)
    with redis_server() as (uri, pid):
        found["redis_sparse"] = served_sparse_slice(sparse_keys, 1 if quick else 5, (uri, pid))
    found["memory_busy"] = in_fresh_process("busy", "--keys", str(busy_keys), "--ticks", "620")
    with redis_server() as (uri, _):
        found["redis_busy"] = redis_fill(uri, busy_keys, ticks=455, prefix="b.", threads=2)
    found["seconds"] = time.monotonic() - started
    return found


# -- all of it -------------------------------------------------------------------------


def measure(quick: bool = False, with_slices: bool = True) -> dict:
    """Every figure, the model's table, and the slices; ``quick`` checks the harness."""
    started = time.monotonic()
    measured: dict = {"load_average_at_start": os.getloadavg()[0]}
    measured |= {"footprint": footprints(quick), "cpu": per_value_cpu(quick)}
    figures = figures_from(measured)
    measured["model"] = capacity_model.table(figures)
    if with_slices:
        measured["slices"] = slices(quick)
    measured["seconds"] = time.monotonic() - started
    measured["load_average_at_end"] = os.getloadavg()[0]
    return measured


def _kib(value: float) -> str:
    return f"{value / 1024:,.1f} KiB"


def rows(measured: dict) -> list[Row]:
    """The figures docs/capacity.md uses, as rows of ``python -m benchmarks``'s table."""
    sizes, cpu, figures = measured["footprint"], measured["cpu"], figures_from(measured)
    found: list[Row] = [
        (
            "capacity: bytes per sparse key (one tick), memory RSS / Redis used_memory, all in",
            f"{figures.memory_sparse_bytes:,.0f} / {figures.redis_sparse_bytes:,.0f} B",
            "(model input)",
            None,
        ),
        (
            "capacity: bytes per busy key (3,601 ticks), memory RSS / Redis used_memory, all in",
            f"{_kib(figures.memory_busy_bytes)} / {_kib(figures.redis_busy_bytes)}",
            "(model input)",
            None,
        ),
        (
            "capacity: bytes per tick held (busy - sparse) / 3,600, memory / Redis",
            f"{figures.tick_bytes('memory'):.2f} / {figures.tick_bytes('redis'):.2f} B",
            "(model input)",
            None,
        ),
    ]
    for storage in ("memory", "redis", "cluster"):
        for shape in ("single", "batch"):
            run = cpu[f"{storage}_{shape}"]
            redis_part = (
                ""
                if storage == "memory"
                else f"; redis-server {run['redis_us']:.1f} µs, {run['redis_commands_per_value']:.1f} commands, "
                f"{run['scripts_per_request']:.0f} script(s) a request"
            )
            what = "single POSTs" if shape == "single" else f"batches of {BATCH:,}"
            found.append(
                (
                    f"capacity: {storage}, {what}, one worker: values/s; CPU per value",
                    f"{run['values_per_s']:,.0f}/s; ringsum {run['app_us']:.1f} µs{redis_part}",
                    "(model input)",
                    None,
                )
            )
    node = 1e6 / figures.cluster_server_us["batch"]
    found.append(
        ("capacity: Cluster node throughput at 100% of its core, batches", f"{node:,.0f} values/s", "(reported)", None)
    )
    found += _slice_rows(measured.get("slices"), figures, sizes)
    return found


def _slice_rows(sliced: dict | None, figures: Figures, sizes: dict) -> list[Row]:
    if not sliced:
        return []
    found: list[Row] = []
    for name, storage, predicted_per_key, what in (
        ("memory_sparse", "memory", figures.memory_sparse_bytes, "served, worker RSS"),
        ("redis_sparse", "Redis", figures.redis_sparse_bytes, "served, used_memory"),
        ("memory_busy", "memory", figures.memory_busy_bytes, "in-process RSS"),
        ("redis_busy", "Redis", figures.redis_busy_bytes, "used_memory"),
    ):
        run = sliced[name]
        keys = run["keys"]
        measured, predicted = run["bytes_per_key"] * keys, predicted_per_key * keys
        kind = "sparse" if "sparse" in name else "busy"
        found.append(
            (
                f"slice: {keys:,} {kind} keys, {storage} ({what}): measured / predicted",
                f"{measured / 2**30:,.2f} / {predicted / 2**30:,.2f} GiB = {measured / predicted:.2f}x",
                "within 0.8-1.25x",
                0.8 <= measured / predicted <= 1.25,
            )
        )
    for name, storage, app_us, redis_us in (
        ("memory_sparse", "memory", figures.memory_app_us["batch"], None),
        ("redis_sparse", "Redis", figures.redis_app_us["batch"], figures.redis_server_us["batch"]),
    ):
        run = sliced[name]
        redis_part = "" if redis_us is None else f", redis-server {run['redis_us']:.1f} (predicted {redis_us:.1f})"
        found.append(
            (
                f"slice: batches to random keys of {run['keys']:,}, {storage}, one worker: values/s; "
                "CPU µs per value measured (predicted)",
                f"{run['values_per_s']:,.0f}/s; ringsum {run['app_us']:.1f} ({app_us:.1f}){redis_part}",
                "(reported)",
                None,
            )
        )
    return found


def _table(found: list[Row]) -> str:
    lines = ["| figure | measured | target | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {'-' if d is None else 'yes' if d else '**no**'} |" for a, b, c, d in found]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small and short: checks the harness in about a minute")
    parser.add_argument("--no-slices", action="store_true", help="skip the slices (about 30 minutes)")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()
    measured = measure(args.quick, not args.no_slices)
    if args.json:
        Path(args.json).write_text(json.dumps(measured, indent=2) + "\n")
    print(
        f"load average {measured['load_average_at_start']:.1f} at the start, {measured['load_average_at_end']:.1f} "
        f"at the end; {measured['seconds']:.0f} s\n"
    )
    print(_table(rows(measured)))
    print()
    print(measured["model"])


if __name__ == "__main__":
    main()
