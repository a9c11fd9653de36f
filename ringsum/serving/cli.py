"""``ringsum`` (also ``python -m ringsum`` and ``python app.py``): its options, the
settings check and the line it says on start.

Everything here runs before Flask and the edge are loaded, so a refused setting or
``--help`` answers at once; ``server.run`` loads the rest once the settings are accepted.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..config import ConfigError, Settings, load_settings, settings_help
from ..core.clock import now_us
from ..core.units import format_duration
from ..http.access_log import configure_logging
from ..storage import DataDirError, inventory, shown_uri, storage_class
from ..storage.datadir import DataDir
from ..storage.repair import repair
from ..version import __version__


def parse_args(argv: list[str] | None, prog: str = "ringsum") -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve ringsum: rolling sums per key over HTTP.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # The one --version: the `ringsum` command and `python -m ringsum` are this parser too.
    parser.add_argument("--version", action="version", version=f"ringsum {__version__}")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (more than 1 needs Redis storage)")
    parser.add_argument(
        "--threads",
        type=int,
        help="request threads per process (default 1: each request runs on the loop that read it; "
        "more run requests on a pool, measured slower even for Redis)",
    )
    parser.add_argument(
        "--repair",
        action="store_true",
        help="memory storage: start from a data dir that is not whole (a log segment missing or emptied, "
        "the snapshot missing beside later segments), accepting the loss, which is logged; "
        "without it such a start is refused",
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
    if workers > 1 and storage_class(settings.storage_uri).single_process:
        raise ConfigError(
            "--workers",
            workers,
            "memory storage lives in one process, so serve it with --workers 1; "
            "for several processes set RINGSUM_STORAGE_URI=redis://host:6379/0",
        )


def start_line(settings: Settings, workers: int, threads: int, address: tuple) -> str:
    host, port = address[:2]
    shown = f"[{host}]" if ":" in host else host
    thread_word = "thread" if threads == 1 else "threads"
    worker_word = "worker" if workers == 1 else "workers"
    mode = f"resolution {format_duration(settings.resolution_us)}" if settings.resolution_us else "exact mode"
    if not storage_class(settings.storage_uri).uses_data_dir:
        kept = ""  # Redis keeps the data: as durable as the Redis behind it
    elif settings.data_dir is None:
        kept = ", no data dir (nothing kept across restarts)"
    else:
        kept = f", data dir {os.path.abspath(settings.data_dir)}, fsync {settings.fsync.value}"
    return (
        f"ringsum serving http://{shown}:{port} (storage {shown_uri(settings.storage_uri)}, "
        f"window {format_duration(settings.window_us)}, {mode}{kept}; "
        f"{workers} {worker_word} x {threads} {thread_word})"
    )


def main(argv: list[str] | None = None, prog: str = "ringsum") -> int:
    """Check the options and settings, then serve; the exit status (2: a bad setting).
    ``prog`` is the command as the user typed it, for ``--help`` and usage errors."""
    args = parse_args(argv, prog)
    try:
        settings = load_settings()
        check_workers(settings, args.workers)
    except ConfigError as error:
        print(f"ringsum: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format)
    if storage_class(settings.storage_uri).uses_data_dir and settings.data_dir is not None:
        try:  # refused here, in one line, before the port is taken or anything announced
            held = DataDir(settings.data_dir)
            if args.repair:
                repair(held, settings.storage_options(), now_us())
            else:
                inventory.check(held)
        except DataDirError as error:
            print(f"ringsum: {error}", file=sys.stderr)
            return 1
        except OSError as error:
            print(f"ringsum: cannot read the data dir {held.path}: {error}", file=sys.stderr)
            return 1
        # Held for as long as this process serves: of two servers started at once on one
        # data dir, exactly one gets here; its workers share the lock (DataDir.hand_down).
        held.hand_down()
    from .server import run  # Flask, the edge and the app: only for settings that are accepted

    threads = args.threads or 1
    return run(
        settings,
        args.host,
        args.port,
        args.workers,
        threads,
        lambda address: start_line(settings, args.workers, threads, address),
    )
