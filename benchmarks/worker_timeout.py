"""``python -m benchmarks.worker_timeout [--runs N] [--timeout 30s]``: how long a
stopped (hung) worker holds the service up (target <= 45 s with the default
``RINGSUM_WORKER_TIMEOUT``). Starts ``python app.py`` as a user does (memory storage, a
fresh data dir), records 100 values, SIGSTOPs its only worker, and times one GET sent
at once on a new connection (it waits in the backlog) until it is answered 200 by the
replacement, which must have read every value back. Prints JSON.

Before the heartbeat, nothing noticed: every request waited for as long as the worker
stayed stopped (30.1 s measured for a 30 s stop; for an indefinite stop, forever).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import time
from pathlib import Path

import requests

from .harness import Server, ringsum_server

VALUES = range(1, 101)


def workers_of(server: Server) -> list[int]:
    pid = server.process.pid
    return [
        int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()
    ]


def one_run(timeout: str | None) -> dict[str, object]:
    env = {} if timeout is None else {"RINGSUM_WORKER_TIMEOUT": timeout}
    with ringsum_server(env=env) as server, requests.Session() as session:
        for value in VALUES:
            assert session.post(f"{server.url}/metric/kept", json={"value": value}, timeout=10).status_code == 200
        [stopped] = workers_of(server)
        os.kill(stopped, signal.SIGSTOP)
        started = time.monotonic()
        answer = requests.get(f"{server.url}/metric/kept/sum", timeout=300)
        waited = time.monotonic() - started
        assert answer.status_code == 200 and answer.json() == {"value": sum(VALUES)}, answer.text
        assert not Path(f"/proc/{stopped}").exists(), "the stopped worker is still there"
        warnings = [line for line in server.output().splitlines() if "sent no heartbeat" in line]
        return {"sigstop_to_first_200_s": round(waited, 2), "warning": warnings[0] if warnings else None}


def run(runs: int = 1, timeout: str | None = None) -> dict[str, object]:
    results = [one_run(timeout) for _ in range(runs)]
    waits = [result["sigstop_to_first_200_s"] for result in results]
    return {
        "worker_timeout": timeout or "30s (default)",
        "sigstop_to_first_200_s": waits,
        "median_s": statistics.median(waits),
        "max_s": max(waits),
        "warning": results[-1]["warning"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.worker_timeout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--timeout", help="RINGSUM_WORKER_TIMEOUT (default: the server's, 30s)")
    args = parser.parse_args()
    print(json.dumps(run(args.runs, args.timeout), indent=2))


if __name__ == "__main__":
    main()
