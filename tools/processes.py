"""Real server processes on free ports: the one launcher of the benchmarks and the tests
(``tests/serving.py`` adds the tests' conveniences on top of it).

A server runs in its own session, so stopping it reaches its workers too, and writes its
output to a temporary file, so it never blocks on a full pipe.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 20.0


def free_port(also_free: int = 0) -> int:
    """A loopback port nobody listens on (and ``port + also_free`` too, for Cluster's bus port)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + also_free >= 65536:
            continue
        if also_free:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + also_free))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port pair found")


@dataclass
class Server:
    """A running server process; ``url`` has no trailing slash."""

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

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S, *, whole_group: bool = False) -> int:
        """Send ``sig`` to the main process (or its whole process group, for a wrapper
        such as ``make`` that does not pass it on) and return its exit status once it
        is gone; killed, and an AssertionError, when it outlives ``timeout``."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if whole_group:
                    os.killpg(self.process.pid, sig)
                else:
                    self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"server did not stop within {timeout}s of signal {sig}:\n{self.output()}") from None

    def exit_status(self, timeout: float = 60.0) -> int:
        """The exit status of a server that must stop on its own (refusing to start);
        killed, and an AssertionError, when it is still running after ``timeout``."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"it kept running: it should have stopped on its own:\n{self.output()}") from None

    def kill(self) -> None:
        """Last resort: SIGKILL the server's whole process group (its workers too)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def rss_bytes(self) -> int:
        """Resident memory of the server and all its processes."""
        return sum(_rss(pid) for pid in [self.process.pid, *descendants(self.process.pid)])

    def cpu_seconds(self) -> float:
        """CPU time (user and system) the server and its processes have used so far."""
        return sum(_cpu_seconds(pid) for pid in [self.process.pid, *descendants(self.process.pid)])

    def worker_rss_bytes(self) -> int:
        """Resident memory of the process that holds the data (the last worker started).
        A checkpoint's fold is a child of the worker and comes after it in
        ``descendants``: skipped, or a run that checkpoints would read the fold's RSS."""
        serving = [pid for pid in descendants(self.process.pid) if not _is_fold(pid)]
        return _rss(serving[-1] if serving else self.process.pid)


def launch(
    argv: Sequence[str],
    env: Mapping[str, str],
    port: int,
    *,
    cwd: Path = ROOT,
    preexec_fn: Callable[[], None] | None = None,
) -> Server:
    """Start ``argv`` (which serves on ``port``) with exactly ``env``, in its own session."""
    log = tempfile.TemporaryFile(mode="w+", prefix="ringsum-server-")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so cleanup reaches the workers too
        preexec_fn=preexec_fn,
    )
    process.log_file = log  # type: ignore[attr-defined]
    return Server(process, port)


def wait_until_listening(
    server: Server, timeout: float = 30.0, answers: Callable[[Server], bool] | None = None
) -> None:
    """Poll until the server accepts connections (and, with ``answers``, until that says
    it answers); an AssertionError with its output if it exits or times out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited with {server.process.returncode} before serving:\n{server.output()}")
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=0.2).close()
            if answers is None or answers(server):
                return
        except OSError:
            pass
        time.sleep(0.05)
    server.kill()
    raise AssertionError(f"server did not answer on {server.port} within {timeout}s:\n{server.output()}")


@contextlib.contextmanager
def stopped_afterwards(server: Server, *, whole_group: bool = False) -> Iterator[Server]:
    """The server for a ``with`` block; SIGTERM (then SIGKILL) when it ends, unless the
    block stopped it already."""
    try:
        yield server
    finally:
        if server.process.poll() is None:
            with contextlib.suppress(AssertionError):  # it was killed; the block's outcome is what counts
                server.stop(whole_group=whole_group)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, children first."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(FileNotFoundError):
            for child in (task / "children").read_text().split():
                found += [int(child), *descendants(int(child))]
    return found


# A worker's checkpoint runs ``python -m ringsum.storage.checkpoint`` (storage/persistence.py).
FOLD_MODULE = "ringsum.storage.checkpoint"


def _is_fold(pid: int) -> bool:
    """Whether ``pid`` is a checkpoint's fold (a gone process counts as one: not a worker)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return True
    return FOLD_MODULE.encode() in argv


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc (fields 14 and 15, after the command's parentheses)."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S
    return 0.0


def _rss(pid: int) -> int:
    with contextlib.suppress(FileNotFoundError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
