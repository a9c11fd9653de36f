"""``python tests/stub_server.py --port P --timeout-s T [--start-s S]``: ringsum's
supervisor and edge serving a stub WSGI app whose start takes ``S`` seconds and whose
``/sleep/<seconds>`` runs that long on the loop: what a slow start or a long request
does to a worker under ``RINGSUM_WORKER_TIMEOUT``, which ``python app.py`` cannot be
made to do on demand."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ringsum.http.edge import EdgeLimits  # after the path above
from ringsum.serving.server import ServeOptions, serve

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


def slow_to_build(start_s: float) -> Callable[[], WSGIApp]:
    def build() -> WSGIApp:
        time.sleep(start_s)

        def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
            path = environ["PATH_INFO"]
            if path.startswith("/sleep/"):
                time.sleep(float(path.removeprefix("/sleep/")))
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [str(os.getpid()).encode()]

        return app

    return build


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--timeout-s", type=float, required=True)
    parser.add_argument("--start-s", type=float, default=0.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    limits = EdgeLimits(max_body=1 << 20, read_timeout_s=10, idle_timeout_s=30)
    options = ServeOptions("127.0.0.1", args.port, 1, 1, limits, worker_timeout_s=args.timeout_s)
    return serve(slow_to_build(args.start_s), options, lambda address: f"ringsum serving http://{address[0]}")


if __name__ == "__main__":
    sys.exit(main())
