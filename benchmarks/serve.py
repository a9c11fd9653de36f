"""``python -m benchmarks.serve {ringsum,bare,naive} --port P [--workers N]``: one app on
ringsum's own granian setup, so every HTTP figure compares apps, not servers."""

from __future__ import annotations

import argparse

from ringsum import create_app
from ringsum.server import serve

from .baselines import bare_app, naive_app

APPS = {"ringsum": create_app, "bare": bare_app, "naive": naive_app}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("app", choices=sorted(APPS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    serve(APPS[args.app], "127.0.0.1", args.port, args.workers)


if __name__ == "__main__":
    main()
