"""``python -m benchmarks.serve {bare,naive} --port P [--server granian|edge]``: a baseline
app on granian's WSGI server (one process, one blocking thread, ``--interface wsgi``): the
floor every HTTP figure of ringsum is compared with; or on ringsum's own edge, to tell
what the edge costs apart from what ringsum's work costs."""

from __future__ import annotations

import argparse
import sys

from granian.constants import Interfaces
from granian.server import Server

from ringsum.http.edge import EdgeLimits
from ringsum.serving.server import ServeOptions, serve

from .baselines import bare_app, naive_app

APPS = {"bare": bare_app, "naive": naive_app}


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("app", choices=sorted(APPS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server", choices=["granian", "edge"], default="granian")
    args = parser.parse_args()
    if args.server == "edge":
        limits = EdgeLimits(max_body=1 << 20, read_timeout_s=10, idle_timeout_s=30)
        sys.exit(serve(APPS[args.app], ServeOptions("127.0.0.1", args.port, 1, 1, limits)))
    server = Server(
        f"benchmarks.baselines:{args.app}_app",
        address="127.0.0.1",
        port=args.port,
        interface=Interfaces.WSGI,
        workers=1,
        blocking_threads=1,
        log_access=False,
        factory=True,
    )
    server.serve()


if __name__ == "__main__":
    main()
