"""Real ``python app.py`` processes for tests: start one on a free port, wait until it
answers, stop it with a signal. Shared by the process tests of every backend."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from redis_servers import free_port

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
# Every data dir a test server got without asking, removed when the test run ends.
_DATA_DIRS = Path(tempfile.mkdtemp(prefix="ringsum-test-data-"))
atexit.register(shutil.rmtree, _DATA_DIRS, ignore_errors=True)


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
    timeout: float = START_TIMEOUT_S,
    cwd: Path = ROOT,
    *,
    open_files: int | None = None,
) -> subprocess.Popen:
    """Start ``python app.py ARGS`` (in ``cwd``) with its output in a temporary file (no pipe
    to fill); ``open_files`` caps the descriptors it may hold (soft and hard limit)."""
    log = tempfile.TemporaryFile(mode="w+", prefix="ringsum-server-")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [sys.executable, str(APP), *args],
        cwd=cwd,
        env=app_env(env),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so cleanup reaches the workers too
        preexec_fn=None if open_files is None else lambda: _limit_open_files(open_files),
    )
    process.log_file = log  # type: ignore[attr-defined]
    return process


def _limit_open_files(count: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


@dataclass
class Server:
    """A running ``python app.py``; ``url`` has no trailing slash."""

    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def total(self, key: str) -> int:
        """The window's sum of ``key``, asked over HTTP."""
        response = requests.get(f"{self.url}/metric/{key}/sum", timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["value"]

    def output(self) -> str:
        """Everything the server printed so far (stdout and stderr)."""
        log = self.process.log_file  # type: ignore[attr-defined]
        log.seek(0)
        return log.read()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Send ``sig`` to the main process and return its exit status once it is gone."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"server did not stop within {timeout}s of signal {sig}:\n{self.output()}") from None

    def kill(self) -> None:
        """Last resort: SIGKILL the server's whole process group (its workers too)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def wait_until_answering(server: Server, timeout: float = START_TIMEOUT_S) -> None:
    """Poll until the server answers any HTTP request (any status: a token may be set)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited with {server.process.returncode} before serving:\n{server.output()}")
        try:
            requests.get(f"{server.url}/metric/serving.probe/sum", timeout=5)
            return
        except (requests.ConnectionError, requests.Timeout):
            # Refused: not listening yet. Timed out: listening (connections wait in the
            # backlog) while the worker is still starting on a loaded machine.
            time.sleep(0.05)
    server.kill()
    raise AssertionError(f"server did not answer within {timeout}s:\n{server.output()}")


def start_server(
    env: Mapping[str, str | None] | None = None,
    *,
    workers: int | None = None,
    threads: int | None = None,
    port: int | None = None,
    cwd: Path = ROOT,
    open_files: int | None = None,
) -> Server:
    """``python app.py --port P [--workers N] [--threads T]`` with ``env`` settings, once it answers."""
    port = port or free_port()
    args = ["--host", "127.0.0.1", "--port", str(port)]
    if workers is not None:
        args += ["--workers", str(workers)]
    if threads is not None:
        args += ["--threads", str(threads)]
    server = Server(run_app(args, env, cwd=cwd, open_files=open_files), port)
    wait_until_answering(server)
    return server


@contextlib.contextmanager
def serving(env: Mapping[str, str | None] | None = None, **options: Any) -> Iterator[Server]:
    """A server for the ``with`` block (``options`` as for start_server); stopped
    (SIGTERM, then SIGKILL) when it ends, unless the block stopped it already."""
    server = start_server(env, **options)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            with contextlib.suppress(AssertionError):  # stop() killed it; the block's outcome is what counts
                server.stop()
