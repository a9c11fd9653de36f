"""``python -m benchmarks.idempotency [--before REF]``: what sending an Idempotency-Key
header costs a POST, and that a POST without it pays nothing.

- In one process, no socket (``idempotency_cost.py``): µs per POST without the
  header, with a new key each time (a write and its marker), and with one key over
  and over (replays).
- Over HTTP (wrk on ``python app.py``, memory storage with its write-ahead log, and a
  single Redis): req/s of the same three, taking turns, as ratios to the header-less
  POST of the same run.
- ``--before REF``: the header-less POST of REF's code (``git archive`` into a
  temporary directory) against this tree's, in process and over HTTP, taking turns.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from .harness import ROOT, median, serving, wrk
from .http_load import redis_server

POST_BODY = '{"value": 3}'
# Markers are capped in memory; a long run of new keys must not reach the cap.
SERVER_ENV = {"RINGSUM_MAX_IDEMPOTENCY_KEYS": "10000000"}
_COST_SCRIPT = Path(__file__).with_name("idempotency_cost.py")


def _lua(kind: str) -> str:
    """wrk script lines that send the header: a new key per request, or one key."""
    if kind == "none":
        return ""
    if kind == "replay":
        return "wrk.headers['Idempotency-Key'] = 'one-key-for-all'"
    prefix = uuid.uuid4().hex  # new per run: a later run must not replay an earlier one
    return (
        "local counter = 0\n"
        "request = function()\n"
        "  counter = counter + 1\n"
        f"  wrk.headers['Idempotency-Key'] = '{prefix}-' .. counter\n"
        "  return wrk.format()\n"
        "end"
    )


def in_process(root: Path, kinds: list[str]) -> dict[str, float]:
    """µs per POST of the ``ringsum`` found in ``root``, in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, str(_COST_SCRIPT), *kinds],
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


KINDS = ["none", "fresh", "replay"]


def _rates(env: dict[str, str], rounds: int, seconds: float) -> dict[str, float]:
    """Median POST req/s of ``python app.py`` with ``env``: no header, new keys, one
    key replayed, taking turns."""
    rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
    with (
        tempfile.TemporaryDirectory(prefix="ringsum-bench-") as data_dir,  # the default shape: a write-ahead log
        serving([sys.executable, "app.py"], {**SERVER_ENV, "RINGSUM_DATA_DIR": data_dir, **env}) as server,
    ):
        url = f"{server.url}/metric/post"
        for _ in range(rounds):
            for kind in KINDS:
                load = wrk(url, seconds=seconds, body=POST_BODY, lua=_lua(kind))
                assert load.bad == 0, f"{kind}: {load.bad} bad answers"
                rates[kind].append(load.requests_per_s)
    return {kind: median(values) for kind, values in rates.items()}


def costs(rounds: int, seconds: float) -> dict:
    """In process and over HTTP, on memory and on a single Redis: no header, new keys,
    one key replayed."""
    result: dict = {"us_per_post": in_process(ROOT, KINDS)}  # best of 5 loops each already
    result["requests_per_s"] = _rates({}, rounds, seconds)
    with redis_server() as (uri, _):
        result["redis_requests_per_s"] = _rates({"RINGSUM_STORAGE_URI": uri}, rounds, seconds)
    result["marker_bytes"] = marker_bytes()
    return result


def rows(results: dict) -> list[tuple[str, str, str, bool | None]]:
    """The ``costs`` figures as rows of the ``python -m benchmarks`` table."""
    micros = results["us_per_post"]
    found = [
        (
            f"{storage}: POST req/s with an Idempotency-Key, {label} / without",
            f"{rates[kind]:,.0f} / {rates['none']:,.0f} = {rates[kind] / rates['none']:.2f}x",
            "(reported)",
            None,
        )
        for storage, rates in (("memory", results["requests_per_s"]), ("Redis", results["redis_requests_per_s"]))
        for kind, label in (("fresh", "a new one each"), ("replay", "one replayed"))
    ]
    found.append(
        (
            "POST µs in process: no header / new Idempotency-Key / replayed",
            f"{micros['none']:.0f} / {micros['fresh']:.0f} / {micros['replay']:.0f}",
            "(reported)",
            None,
        )
    )
    found.append(("memory per remembered Idempotency-Key", f"{results['marker_bytes']:,.0f} B", "(reported)", None))
    return found


def marker_bytes(count: int = 200_000) -> float:
    """Memory one remembered key takes in the memory storage's table: a UUID key and a
    single post's answer, measured as resident memory growth over ``count`` of them."""
    code = f"""
import gc, hashlib, uuid
from ringsum.storage.base import Marker
from ringsum.storage.markers import Markers
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
table = Markers(3_601_000_000, {count})
gc.collect()
before = rss()
for index in range({count}):
    fingerprint = hashlib.sha256(str(index).encode()).digest()
    table.add(Marker(str(uuid.uuid4()), fingerprint, 200, b"{{}}"), 1_800_000_000_000_000 + index)
gc.collect()
print((rss() - before) / {count})
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return float(out)


def before_after(ref: str, rounds: int, seconds: float) -> dict:
    """The header-less POST, REF's code against this tree's, taking turns."""
    with tempfile.TemporaryDirectory(prefix="ringsum-before-") as directory:
        before_root = Path(directory)
        archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before_root)], input=archive, check=True)
        micros: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(rounds):
            micros["before"].append(in_process(before_root, ["none"])["none"])
            micros["after"].append(in_process(ROOT, ["none"])["none"])
        rates: dict[str, list[float]] = {"before": [], "after": []}
        with (
            tempfile.TemporaryDirectory(prefix="ringsum-bench-") as before_data,
            tempfile.TemporaryDirectory(prefix="ringsum-bench-") as after_data,
            serving([sys.executable, str(before_root / "app.py")], {"RINGSUM_DATA_DIR": before_data}) as before,
            serving([sys.executable, "app.py"], {**SERVER_ENV, "RINGSUM_DATA_DIR": after_data}) as after,
        ):
            for _ in range(rounds):
                for name, server in (("before", before), ("after", after)):
                    rates[name].append(wrk(f"{server.url}/metric/post", seconds=seconds, body=POST_BODY).requests_per_s)
    return {
        "ref": ref,
        "us_per_post": {name: min(values) for name, values in micros.items()},
        "requests_per_s": {name: median(values) for name, values in rates.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.idempotency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--before", help="a git ref whose header-less POST to compare with this tree's")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each server, taking turns (default 5)")
    parser.add_argument("--seconds", type=int, default=3, help="seconds of load per round (default 3)")
    args = parser.parse_args()
    results = {"costs": costs(args.rounds, args.seconds)}
    if args.before:
        results["before_after"] = before_after(args.before, args.rounds, args.seconds)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
