"""``python -m benchmarks.hostile [--quick]``: how long ringsum takes to refuse a 1 MiB
hostile body (a huge array, a huge extra field), in the process and on ``python app.py``
holding 100,000 live keys, and what another client's GET sees while 3 clients send
such bodies. Prints JSON.

The figures of the parser before this one cannot be measured in the same run (it is
gone): it took 143-450 ms per body, and a probe's median was 392 ms. The batch
figure is a ratio to the parser it replaced (``previous_batch_parse``: the stdlib decoder
with Decimal fractions and a check per event), measured alongside, taking turns.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from decimal import ROUND_HALF_UP, Decimal

import requests

from .harness import ringsum_server, wrk

MIB = 1024 * 1024
MAX_VALUE = 2**53 - 1
KEY = re.compile("[A-Za-z0-9_.:-]{1,200}")


def array_body(size: int = MIB) -> bytes:
    """``[1,1,...,1]``, ``size`` bytes at most: to POST /metric, wrong at its first event."""
    return b"[" + b"1," * ((size - 3) // 2) + b"1]"


def extra_field_body(size: int = MIB) -> bytes:
    """``{"value": 1, "x": [1,1,...]}``, ``size`` bytes at most: to POST /metric/<key>."""
    head = b'{"value": 1, "x": '
    return head + array_body(size - len(head) - 1) + b"}"


def batch_body(events: int = 10_000) -> bytes:
    """A valid batch: ``events`` events over 1,000 keys, half the values fractions."""
    return json.dumps(
        [{"key": f"metric.{index % 1000}", "value": index * 1.5 if index % 2 else index} for index in range(events)]
    ).encode()


def previous_batch_parse(body: bytes) -> list[tuple[str, int]]:
    """The batch parser this one replaced, for the baseline: the stdlib decoder with a
    Decimal for every fraction, then one check per event (same answers on valid batches)."""
    events = json.loads(body.decode("utf-8-sig"), parse_float=Decimal)
    parsed = []
    for event in events:
        key, value = event["key"], event["value"]
        if not isinstance(key, str) or KEY.fullmatch(key) is None or isinstance(value, bool):
            raise ValueError(event)
        rounded = int(value.to_integral_value(rounding=ROUND_HALF_UP)) if isinstance(value, Decimal) else value
        if not -MAX_VALUE <= rounded <= MAX_VALUE:
            raise ValueError(event)
        parsed.append((key, rounded))
    return parsed


def _timed_ms(run: Callable[[], object], times: int) -> dict[str, float]:
    """Median, best and worst wall time of ``run``, in ms; a refusal (an exception) is an
    answer. The best is what the work costs when no neighbour takes the CPU meanwhile."""
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        with contextlib.suppress(Exception):  # a refusal is an answer: it is what is timed
            run()
        spent.append((time.perf_counter() - started) * 1000)
    return {"median": statistics.median(spent), "best": min(spent), "max": max(spent)}


def in_process(times: int = 30) -> dict:
    """Parse cost without a server: each hostile body, and a valid 10,000-event batch
    against the parser this one replaced (taking turns)."""
    from ringsum.inputs.values import parse_batch_body, parse_value_body

    array, extra, batch = array_body(), extra_field_body(), batch_body()
    assert parse_batch_body(batch) == previous_batch_parse(batch)
    ours, previous = [], []
    for _ in range(times):
        ours.append(_timed_ms(lambda: parse_batch_body(batch), 1)["median"])
        previous.append(_timed_ms(lambda: previous_batch_parse(batch), 1)["median"])
    return {
        "array_to_batch": _timed_ms(lambda: parse_batch_body(array), times),
        "extra_field_to_single": _timed_ms(lambda: parse_value_body(extra), times),
        "batch_10000_ms": statistics.median(ours),
        "batch_10000_previous_parser_ms": statistics.median(previous),
    }


def over_http(keys: int = 100_000, seconds: int = 10, times: int = 30) -> dict:
    """On ``python app.py`` with ``keys`` live keys: each hostile body's round trip (one
    client, one at a time), then a probe GET (wrk, 1 connection) while 3 connections
    send 1 MiB ``[1,1,...]`` bodies as fast as they are answered."""
    array, extra = array_body(), extra_field_body()
    with ringsum_server() as server:
        with requests.Session() as session:
            for start in range(0, keys, 1000):
                events = [{"key": f"key.{start + index}", "value": 1} for index in range(1000)]
                session.post(f"{server.url}/metric", json=events, timeout=30).raise_for_status()
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        statuses: set[int] = set()

        def post(path: str, body: bytes) -> None:
            connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            statuses.add(response.status)

        array_ms = _timed_ms(lambda: post("/metric", array), times)
        extra_ms = _timed_ms(lambda: post("/metric/hostile", extra), times)
        connection.close()
        with _hostile_senders(server.url, array.decode(), seconds + 2):
            time.sleep(1)  # the senders are under way
            probe = wrk(f"{server.url}/metric/key.1/sum", seconds=seconds, connections=1)
    return {
        "keys": keys,
        "statuses": sorted(statuses),
        "array_to_batch": array_ms,
        "extra_field_to_single": extra_ms,
        "probe_p50_ms": probe.p50_ms,
        "probe_p99_ms": probe.p99_ms,
        "probe_max_ms": probe.max_ms,
    }


@contextlib.contextmanager
def _hostile_senders(url: str, body: str, seconds: int) -> Iterator[None]:
    """3 wrk connections posting ``body`` to /metric for ``seconds``, in the background."""
    senders = threading.Thread(
        target=wrk, args=(f"{url}/metric",), kwargs={"seconds": seconds, "connections": 3, "body": body}, daemon=True
    )
    senders.start()
    try:
        yield
    finally:
        senders.join()


def run(quick: bool = False) -> dict:
    return {
        "in_process": in_process(10 if quick else 30),
        "http": over_http(keys=10_000 if quick else 100_000, seconds=3 if quick else 10, times=10 if quick else 30),
    }


def rows(results: dict) -> list[tuple[str, str, str, bool | None]]:
    """The rows of ``python -m benchmarks``: figure, measured, target, met (on the median)."""
    http, local = results["http"], results["in_process"]
    batch_ratio = local["batch_10000_ms"] / local["batch_10000_previous_parser_ms"]
    shown = []
    for name, body, path, before in (
        ("array_to_batch", "[1,1,...]", "/metric", "was 143-450 ms"),
        ("extra_field_to_single", '{"value": 1, "x": [1,...]}', "/metric/k", "was accepted after 143-450 ms"),
    ):
        over, alone = http[name], local[name]
        shown.append(
            (
                f"1 MiB {body} to POST {path}, refused (422), {http['keys']:,} keys: round trip median / best / max",
                f"{over['median']:.1f} / {over['best']:.1f} / {over['max']:.1f} ms "
                f"(parse alone {alone['median']:.1f} / {alone['best']:.1f} ms; {before})",
                "<= 10 ms",
                over["median"] <= 10,
            )
        )
    return [
        *shown,
        (
            "probe GET while 3 clients send 1 MiB [1,1,...]: p50 / p99 / max",
            f"{http['probe_p50_ms']:.1f} / {http['probe_p99_ms']:.1f} / {http['probe_max_ms']:.1f} ms "
            "(was p50 392 ms, max 640 ms)",
            "p50 <= 10 ms",
            http["probe_p50_ms"] <= 10,
        ),
        (
            "parse a valid 10,000-event batch: this parser / the stdlib-based one it replaced",
            f"{local['batch_10000_ms']:.1f} / {local['batch_10000_previous_parser_ms']:.1f} ms = {batch_ratio:.2f}x",
            "<= 1.0x",
            batch_ratio <= 1.0,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.hostile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10,000 keys, short runs")
    print(json.dumps(run(parser.parse_args().quick), indent=2))


if __name__ == "__main__":
    main()
