"""``python benchmarks/idempotency_cost.py``: µs of CPU per ``POST /metric/k`` inside
one process, without a socket: no header, a new Idempotency-Key each time (a write
and its marker), one key over and over (replays). Prints JSON.

Run as a file, not a module, so that PYTHONPATH picks whose ``ringsum`` is measured:
``benchmarks/idempotency.py`` runs it on this tree and on an older one, alternately.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import tempfile
import time
from collections.abc import Callable, Iterator

from ringsum import create_app
from ringsum.web.state import close_app

BODY = b'{"value": 3}'
COUNT = 20_000
LOOPS = 5


def _environ(headers: dict[str, str]) -> dict:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/metric/k",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "5000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(BODY),
        "CONTENT_LENGTH": str(len(BODY)),
        "CONTENT_TYPE": "application/json",
        **headers,
    }


def _headers(kind: str) -> Iterator[dict[str, str]]:
    if kind == "none":
        return itertools.repeat({})
    if kind == "replay":
        return itertools.repeat({"HTTP_IDEMPOTENCY_KEY": "one-key-for-all"})
    return ({"HTTP_IDEMPOTENCY_KEY": f"key-{index}"} for index in itertools.count())


def microseconds_per_post(app: Callable, kind: str) -> float:
    """Best of LOOPS loops of COUNT requests, so a busy neighbour inflates nothing."""
    headers = _headers(kind)
    best = float("inf")
    for _ in range(LOOPS):
        environs = [_environ(next(headers)) for _ in range(COUNT)]  # built outside the timing
        started = time.perf_counter()
        for environ in environs:
            for _chunk in app(environ, lambda *_: None):
                pass
        best = min(best, (time.perf_counter() - started) / COUNT)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/idempotency_cost.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    every = ["none", "fresh", "replay"]
    parser.add_argument("kinds", nargs="*", metavar="KIND", help=f"of {', '.join(every)} (default: all)")
    kinds = parser.parse_args().kinds or every
    if unknown := set(kinds) - set(every):
        parser.error(f"no kind {', '.join(sorted(unknown))}: choose from {', '.join(every)}")
    with tempfile.TemporaryDirectory(prefix="ringsum-cost-") as data_dir:  # the default shape: a write-ahead log
        app = create_app({"RINGSUM_DATA_DIR": data_dir, "RINGSUM_MAX_IDEMPOTENCY_KEYS": "10000000"})
        print(json.dumps({kind: microseconds_per_post(app, kind) for kind in kinds}))
        close_app(app)


if __name__ == "__main__":
    main()
