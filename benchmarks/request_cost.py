"""``python -m benchmarks.request_cost``: the CPU one request costs inside the process,
without a server or a socket: ringsum, the bare Flask floor, and a plain WSGI function
doing ringsum's whole job (parse, validate, record). What is left between the last
two is Flask's share, the part no change to ringsum's own code can remove.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable, Iterable

from ringsum import create_app
from ringsum.inputs.keys import parse_key
from ringsum.inputs.values import parse_value_body
from ringsum.web import state
from ringsum.web.body_limit import WHOLE_BODY

from .baselines import bare_app

Wsgi = Callable[[dict, Callable], Iterable[bytes]]
BODY = b'{"value": 3}'


def _environ(method: str, path: str, body: bytes = b"") -> dict:
    return {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "5000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        WHOLE_BODY: body,  # as ringsum's edge hands it over (other apps ignore it)
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json",
    }


def microseconds_per_request(app: Wsgi, method: str, path: str, body: bytes = b"", count: int = 20_000) -> float:
    """Best of five loops, so a busy neighbour inflates nothing."""

    def start_response(*_: object) -> None:
        return None

    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(count):
            for _chunk in app(_environ(method, path, body), start_response):
                pass
        best = min(best, (time.perf_counter() - started) / count)
    return best * 1e6


def main() -> None:
    argparse.ArgumentParser(
        prog="python -m benchmarks.request_cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args()
    ringsum = create_app({"RINGSUM_DATA_DIR": ""})  # the request's own cost; benchmarks/durability.py prices the log
    storage = state.storage(ringsum)

    def ringsum_work_only(environ: dict, start_response: Callable) -> list[bytes]:
        key = parse_key(environ["PATH_INFO"].removeprefix("/metric/"))
        storage.record(key, parse_value_body(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))))
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
        return [b"{}"]

    for name, app in {
        "ringsum": ringsum,
        "bare Flask": bare_app(),
        "ringsum's work, no Flask": ringsum_work_only,
    }.items():
        print(f"{name:>26}: POST {microseconds_per_request(app, 'POST', '/metric/k', BODY):6.1f} µs")
    storage.close()


if __name__ == "__main__":
    main()
