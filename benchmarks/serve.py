"""``python -m benchmarks.serve {bare,naive} --port P``: a baseline app on ringsum's own
granian setup (one process, one thread, as ``python app.py`` serves memory storage),
so every HTTP figure compares apps, not servers."""

from __future__ import annotations

import argparse

from ringsum.server import serve

from .baselines import bare_app, naive_app

APPS = {"bare": bare_app, "naive": naive_app}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("app", choices=sorted(APPS))
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    serve(APPS[args.app], "127.0.0.1", args.port)


if __name__ == "__main__":
    main()
