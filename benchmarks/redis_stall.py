"""``python -m benchmarks.redis_stall [--runs N] [--timeout 1s] [--stall 4] [--root DIR]``:
what clients see while Redis stalls. Starts a redis-server of its own
(with ``enable-debug-command``) and ``python app.py --workers 2`` on it, warms both
workers' connections, then runs ``DEBUG SLEEP <stall>`` and meanwhile has 24 clients
POST in a loop (a new connection per request) and one client ask ``/readyz`` in a loop,
until the stall ends. Prints the latency of every answer (median, max), the statuses,
and how long after the stall ended ``/readyz`` said 200 again. JSON.

``--root`` serves the ringsum checked out in another directory (for a before/after:
``git archive <commit> | tar -x -C /tmp/before``).

Before the breaker (measured with ``DEBUG SLEEP 8``): each worker met the
stall once per queued request, one at a time, so answers took up to the whole stall.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import requests

from tools.processes import ROOT, free_port, launch, stopped_afterwards, wait_until_listening

CLIENTS = 24


@contextmanager
def debug_redis() -> Iterator[int]:
    """A throwaway redis-server that takes DEBUG SLEEP; yields its port."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ringsum-bench-redis-") as directory:
        process = subprocess.Popen(
            [
                *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
                *("--dir", directory, "--enable-debug-command", "yes"),
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            yield port
        finally:
            process.terminate()
            process.wait(10)


def _timed(method: str, url: str, **kwargs: object) -> tuple[float, int, str | None]:
    """Seconds to the answer (a fresh connection), its status and Retry-After."""
    started = time.monotonic()
    try:
        answer = requests.request(method, url, timeout=60, **kwargs)  # type: ignore[arg-type]
    except requests.RequestException:
        return time.monotonic() - started, 0, None
    return time.monotonic() - started, answer.status_code, answer.headers.get("Retry-After")


def one_run(timeout: str, stall_s: float, root: Path) -> dict[str, object]:
    with debug_redis() as redis_port:
        env = {
            "RINGSUM_STORAGE_URI": f"redis://127.0.0.1:{redis_port}/0",
            "RINGSUM_REDIS_TIMEOUT": timeout,
            "RINGSUM_DATA_DIR": "",
        }
        env.update((name, value) for name, value in os.environ.items() if not name.startswith("RINGSUM_"))
        port = free_port()
        server = launch([sys.executable, "app.py", "--workers", "2", "--port", str(port)], env, port, cwd=root)
        wait_until_listening(server, timeout=30)
        with stopped_afterwards(server):
            url = server.url
            for value in range(50):  # both workers connected to Redis, scripts loaded
                assert requests.post(f"{url}/metric/warm", json={"value": value}, timeout=10).status_code == 200
            stalled = threading.Event()
            stall_over = threading.Event()

            def stall() -> None:
                stalled.set()
                redis.Redis(port=redis_port, socket_timeout=stall_s + 30).execute_command("DEBUG", "SLEEP", stall_s)
                stall_over.set()

            posts: list[tuple[float, int, str | None]] = []
            ready: list[tuple[float, int, str | None]] = []

            def post_until_over() -> None:
                while not stall_over.is_set():
                    posts.append(_timed("POST", f"{url}/metric/stalled", json={"value": 1}))

            def readyz_until_over() -> None:
                while not stall_over.is_set():
                    ready.append(_timed("GET", f"{url}/readyz"))
                    time.sleep(0.05)

            staller = threading.Thread(target=stall)
            staller.start()
            stalled.wait()
            time.sleep(0.05)  # DEBUG SLEEP has reached Redis
            clients = [threading.Thread(target=post_until_over) for _ in range(CLIENTS)]
            clients.append(threading.Thread(target=readyz_until_over))
            for client in clients:
                client.start()
            staller.join()
            over_at = time.monotonic()
            for client in clients:
                client.join()
            while _timed("GET", f"{url}/readyz")[1] != 200:
                time.sleep(0.02)
            recovered_s = time.monotonic() - over_at
    post_seconds = [seconds for seconds, _, _ in posts]
    ready_seconds = [seconds for seconds, _, _ in ready]
    statuses: dict[str, int] = {}
    for _, status, _ in posts:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "posts": len(posts),
        "post_statuses": statuses,
        "post_503s_without_retry_after": sum(1 for _, status, retry in posts if status == 503 and not retry),
        "post_median_s": round(statistics.median(post_seconds), 3),
        "post_max_s": round(max(post_seconds), 3),
        "readyz_answers": len(ready),
        "readyz_statuses": sorted({status for _, status, _ in ready}),
        "readyz_median_s": round(statistics.median(ready_seconds), 3) if ready else None,
        "readyz_max_s": round(max(ready_seconds), 3) if ready else None,
        "readyz_200_again_after_stall_s": round(recovered_s, 3),
    }


def run(runs: int = 1, timeout: str = "1s", stall_s: float = 4.0, root: Path = ROOT) -> dict[str, object]:
    results = [one_run(timeout, stall_s, root) for _ in range(runs)]
    return {
        "redis_timeout": timeout,
        "stall_s": stall_s,
        "clients": CLIENTS,
        "workers": 2,
        "post_max_s": [result["post_max_s"] for result in results],
        "readyz_max_s": [result["readyz_max_s"] for result in results],
        "runs": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_stall", description=__doc__)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--timeout", default="1s", help="RINGSUM_REDIS_TIMEOUT (default 1s, the server's default)")
    parser.add_argument("--stall", type=float, default=4.0, help="seconds of DEBUG SLEEP (default 4)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the ringsum checkout to serve (default: this one)")
    args = parser.parse_args()
    print(json.dumps(run(args.runs, args.timeout, args.stall, args.root.resolve()), indent=2))


if __name__ == "__main__":
    main()
