"""Load: start a server on a free port (``tools/processes.py``), drive it with wrk."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from tools.processes import ROOT, Server, free_port, launch, stopped_afterwards, wait_until_listening

__all__ = ["ROOT", "Load", "Server", "free_port", "median", "ringsum_server", "serving", "wrk"]

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
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    bad: int


@contextmanager
def serving(argv: list[str], env: Mapping[str, str] | None = None) -> Iterator[Server]:
    """Run ``argv + [--port, P]`` until it answers on P; SIGTERM it afterwards. It gets a
    fresh data dir of its own (removed afterwards) unless ``env`` names one."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ringsum-bench-data-") as data_dir:
        command = (
            [*argv, "--port", str(port)] if "{port}" not in " ".join(argv) else [a.format(port=port) for a in argv]
        )
        server = launch(command, {**os.environ, "RINGSUM_DATA_DIR": data_dir, **(env or {})}, port)
        wait_until_listening(server, timeout=20)
        with stopped_afterwards(server):
            yield server


def ringsum_server(
    app: str = "ringsum", workers: int = 1, env: Mapping[str, str] | None = None, server: str = "granian"
):
    """ringsum exactly as a user starts it; a baseline on granian (the floor) or on ringsum's edge."""
    if app == "ringsum":
        return serving([sys.executable, "app.py", "--workers", str(workers)], env)
    return serving([sys.executable, "-m", "benchmarks.serve", app, "--server", server], env)


def wrk(url: str, *, seconds: float, connections: int = 16, body: str | None = None, lua: str = "") -> Load:
    """Drive ``url`` with wrk (GET, or POST of ``body`` as JSON) for ``seconds`` (whole:
    wrk takes no fractions);
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
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", lua.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    report = json.loads(out.split("RESULT ", 1)[1])
    return Load(
        requests=report["requests"],
        requests_per_s=report["requests"] / (report["duration_us"] / 1e6),
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        max_ms=report["max_us"] / 1000,
        bad=report["bad"],
    )


def median(values: list[float]) -> float:
    return statistics.median(values)


def run_parts(prog: str, description: str | None, parts: Mapping[str, Callable[[], object]]) -> None:
    """A benchmark's command line: run the named parts (all by default), print their JSON."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("parts", nargs="*", metavar="PART", help=f"of {', '.join(parts)} (default: all)")
    chosen = parser.parse_args().parts or list(parts)
    if unknown := set(chosen) - set(parts):
        parser.error(f"no part {', '.join(sorted(unknown))}: choose from {', '.join(parts)}")
    print(json.dumps({name: parts[name]() for name in chosen}, indent=2))
