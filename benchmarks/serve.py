"""``python -m benchmarks.serve {bare,naive} --port P``: a baseline app on granian's WSGI
server (one process, one blocking thread, ``--interface wsgi``): the floor every HTTP
figure of ringsum is compared with."""

from __future__ import annotations

import argparse

from granian.constants import Interfaces
from granian.server import Server

from .baselines import bare_app, naive_app

APPS = {"bare": bare_app, "naive": naive_app}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__)
    parser.add_argument("app", choices=sorted(APPS))
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
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
