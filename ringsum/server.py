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
from collections.abc import Callable
from typing import Any

from granian.constants import Interfaces
from granian.server import MPServer
from granian.server.mp import WorkerProcess

from . import create_app
from .config import ConfigError, Settings, load_settings

# granian's own WSGI worker body; we wrap it to close the storage when it returns.
_granian_wsgi_worker = MPServer._spawn_wsgi_worker.__wrapped__


@WorkerProcess.wrap_target
def _wsgi_worker(worker_id: int, callback: Any, *args: Any, **kwargs: Any) -> None:
    try:
        _granian_wsgi_worker(worker_id, callback, *args, **kwargs)
    finally:
        storage = getattr(callback, "extensions", {}).get("ringsum.storage")
        if storage is not None:
            storage.close()


def serve(build_app: Callable[[], Any], host: str, port: int, workers: int = 1, threads: int = 1) -> None:
    """Serve a WSGI app on granian as ringsum is served (the benchmarks serve their
    baselines through here too). ``build_app`` runs inside each worker process."""
    server = MPServer(
        "ringsum",
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        workers=workers,
        blocking_threads=threads,
        log_access=False,
    )
    server.serve(spawn_target=_wsgi_worker, target_loader=lambda *_, **__: build_app(), wrap_loader=False)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python app.py", description="Serve ringsum.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (more than 1 needs Redis storage)")
    parser.add_argument(
        "--threads",
        type=int,
        help="request threads per process (default: 1 with memory storage, 2 with Redis, whose round trips they overlap)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
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
    try:
        memory = settings.storage_uri.startswith("memory:")
        serve(create_app, args.host, args.port, args.workers, args.threads or (1 if memory else 2))
    except RuntimeError as error:
        # granian reports a socket it cannot open (port taken, address not ours) this way.
        reason = str(error).splitlines()[0] if str(error) else repr(error)
        if "os error" not in reason:
            raise
        print(f"ringsum: cannot listen on {args.host}:{args.port}: {reason}", file=sys.stderr)
        return 1
    return 0
