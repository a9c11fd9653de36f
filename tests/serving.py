"""Real ``python app.py`` processes for tests: start one on a free port, wait until it
answers, stop it with a signal. Shared by the process tests of every backend; the
process handling itself is ``tools/processes.py``, which the benchmarks use too."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import requests

from tools.processes import ROOT, Server, free_port, launch, stopped_afterwards, wait_until_listening

APP = ROOT / "app.py"
START_TIMEOUT_S = 30.0
# Every data dir a test server got without asking, removed when the test run ends.
_DATA_DIRS = Path(tempfile.mkdtemp(prefix="ringsum-test-data-"))
atexit.register(shutil.rmtree, _DATA_DIRS, ignore_errors=True)

__all__ = [
    "ROOT",
    "START_TIMEOUT_S",
    "Server",
    "app_env",
    "free_port",
    "run_app",
    "serving",
    "start_server",
    "wait_until_answering",
]


def app_env(env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This environment without any RINGSUM_* setting, plus ``env``: a child sees only
    the settings its test chose, and a fresh data dir of its own unless ``env`` names
    one (so servers running side by side never share one). A None in ``env`` unsets
    that variable (``{"RINGSUM_DATA_DIR": None}``: the default, ./data)."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("RINGSUM_")}
    own = {"RINGSUM_DATA_DIR": tempfile.mkdtemp(dir=_DATA_DIRS)}
    chosen = {**clean, **own, **(env or {})}
    return {name: value for name, value in chosen.items() if value is not None}


def run_app(
    args: list[str],
    env: Mapping[str, str | None] | None = None,
    cwd: Path = ROOT,
    *,
    open_files: int | None = None,
) -> Server:
    """Start ``python app.py ARGS`` (in ``cwd``), without waiting for it to serve (its
    port is the ``--port`` of ARGS, 0 without one); ``open_files`` caps the descriptors
    it may hold (soft and hard limit)."""
    port = int(args[args.index("--port") + 1]) if "--port" in args else 0
    limit = None if open_files is None else lambda: _limit_open_files(open_files)
    return launch([sys.executable, str(APP), *args], app_env(env), port, cwd=cwd, preexec_fn=limit)


def _limit_open_files(count: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


def answers(server: Server) -> bool:
    """Whether the server has bound its port (it says so in its start line: what answers
    before that is another process's server) and answers an HTTP request (any status: a
    token may be set)."""
    if "ringsum serving http" not in server.output():
        return False
    try:
        requests.get(f"{server.url}/metric/serving.probe/sum", timeout=5)
    except (requests.ConnectionError, requests.Timeout):
        # Refused: not listening yet. Timed out: listening (connections wait in the
        # backlog) while the worker is still starting on a loaded machine.
        return False
    return True


def wait_until_answering(server: Server, timeout: float = START_TIMEOUT_S) -> None:
    wait_until_listening(server, timeout, answers)


def start_server(
    env: Mapping[str, str | None] | None = None,
    *,
    workers: int | None = None,
    threads: int | None = None,
    port: int | None = None,
    cwd: Path = ROOT,
    open_files: int | None = None,
) -> Server:
    """``python app.py --port P [--workers N] [--threads T]`` with ``env`` settings, once it
    answers. Without a ``port``, a free one; if another test process takes it before the
    server binds it (pytest-xdist workers pick ports at once), another one."""
    options = [] if workers is None else ["--workers", str(workers)]
    options += [] if threads is None else ["--threads", str(threads)]
    for attempt in range(3):
        server = run_app(
            ["--host", "127.0.0.1", "--port", str(port or free_port()), *options], env, cwd=cwd, open_files=open_files
        )
        try:
            wait_until_answering(server)
            return server
        except AssertionError:
            taken = server.process.poll() == 1 and "cannot listen" in server.output()
            if port is not None or not taken or attempt == 2:
                raise
    raise AssertionError("unreachable")


def serving(env: Mapping[str, str | None] | None = None, **options: Any) -> Iterator[Server]:
    """A server for the ``with`` block (``options`` as for start_server); stopped
    (SIGTERM, then SIGKILL) when it ends, unless the block stopped it already."""
    return stopped_afterwards(start_server(env, **options))
