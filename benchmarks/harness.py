"""Processes and load: start a server on a free port, drive it with wrk, read its RSS."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# wrk reports through this Lua hook, so we parse numbers, not its human summary.
_WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nRESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, "bad": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.status + e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass(frozen=True)
class Load:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    bad: int


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_bytes(self) -> int:
        """Resident memory of the server and its worker processes."""
        return sum(_rss(pid) for pid in [self.process.pid, *_descendants(self.process.pid)])

    def worker_rss_bytes(self) -> int:
        """Resident memory of the process that holds the data (granian's worker)."""
        children = _descendants(self.process.pid)
        return _rss(children[-1] if children else self.process.pid)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(argv: list[str], env: Mapping[str, str] | None = None) -> Iterator[Server]:
    """Run ``argv + [--port, P]`` until it answers on P; SIGTERM it afterwards. It gets a
    fresh data dir of its own (removed afterwards) unless ``env`` names one."""
    port = free_port()
    data_dir = tempfile.TemporaryDirectory(prefix="ringsum-bench-data-")
    process = subprocess.Popen(
        [*argv, "--port", str(port)] if "{port}" not in " ".join(argv) else [a.format(port=port) for a in argv],
        cwd=ROOT,
        env={**os.environ, "RINGSUM_DATA_DIR": data_dir.name, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_until_listening(port, process)
        yield Server(port, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        data_dir.cleanup()


def ringsum_server(
    app: str = "ringsum", workers: int = 1, env: Mapping[str, str] | None = None, server: str = "granian"
):
    """ringsum exactly as a user starts it; a baseline on granian (the floor) or on ringsum's edge."""
    if app == "ringsum":
        return serving([sys.executable, "app.py", "--workers", str(workers)], env)
    return serving([sys.executable, "-m", "benchmarks.serve", app, "--server", server], env)


def wrk(url: str, *, seconds: float, connections: int = 16, body: str | None = None, lua: str = "") -> Load:
    """Drive ``url`` with wrk (GET, or POST of ``body`` as JSON) for ``seconds``;
    ``lua``: more wrk script, such as a ``request`` function that sets headers."""
    script = lua + "\n" + _WRK_REPORT
    if body is not None:
        script = (
            f"wrk.method = 'POST'\nwrk.body = {json.dumps(body)}\nwrk.headers['Content-Type'] = 'application/json'\n"
            + script
        )
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", lua.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    report = json.loads(out.split("RESULT ", 1)[1])
    return Load(
        requests_per_s=report["requests"] / (report["duration_us"] / 1e6),
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        max_ms=report["max_us"] / 1000,
        bad=report["bad"],
    )


def median(values: list[float]) -> float:
    return statistics.median(values)


def _wait_until_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server not listening on {port} after {timeout}s")


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            found += [int(child), *_descendants(int(child))]
    return found


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
