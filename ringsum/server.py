"""``python app.py``: serve on granian, stop cleanly on SIGTERM/SIGINT.

Granian was measured fastest for this app on one process (see the README); memory
storage must live in exactly one process. The app is built inside the worker
process, after the fork, so the sweeper thread and the lock belong to the process
that serves, and the worker writes the snapshot when granian stops it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from granian.constants import Interfaces
from granian.server import MPServer
from granian.server.mp import WorkerProcess

from .config import ConfigError, Settings, load_settings

# granian's own WSGI worker body; we wrap it to close the storage when it returns.
_granian_wsgi_worker = MPServer._spawn_wsgi_worker.__wrapped__


@WorkerProcess.wrap_target
def _wsgi_worker(worker_id: int, callback: Any, *args: Any, **kwargs: Any) -> None:
    try:
        _granian_wsgi_worker(worker_id, callback, *args, **kwargs)
    finally:
        callback.extensions["ringsum.storage"].close()


def _build_app(*_: Any, **__: Any) -> Any:
    from . import create_app

    return create_app()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python app.py", description="Serve ringsum.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (more than 1 needs Redis storage)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def check_workers(settings: Settings, workers: int) -> None:
    if workers > 1 and settings.storage_uri.startswith("memory:"):
        raise ConfigError(
            "--workers",
            workers,
            "memory storage lives in one process, so serve it with --workers 1; "
            "for several processes set RINGSUM_STORAGE_URI=redis://host:6379/0",
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
        check_workers(settings, args.workers)
    except ConfigError as error:
        print(f"ringsum: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = MPServer(
        "ringsum",
        address=args.host,
        port=args.port,
        interface=Interfaces.WSGI,
        workers=args.workers,
        blocking_threads=1,
        log_access=False,
    )
    server.serve(spawn_target=_wsgi_worker, target_loader=_build_app, wrap_loader=False)
    return 0
