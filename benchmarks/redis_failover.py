"""``python -m benchmarks.redis_failover [--full-coverage yes|no] [--root DIR]``: a
Redis Cluster failover under load. Starts six redis-servers (three
primaries, one replica each, ``cluster-node-timeout 1000``), waits until the replicas
are in sync, serves ``python app.py --workers 2`` on them, then SIGSTOPs one primary and
for 7 s has 24 clients post to 12 keys in turn (4 or so on the stopped primary's shard),
each on its keep-alive connection, 50 ms between two posts.
Prints, for keys on healthy shards and on the stopped one, the answers by status, the
slowest answer, and when the stopped shard's keys were served again (by the promoted
replica). JSON.

``--full-coverage`` sets ``cluster-require-full-coverage`` (Redis's default is yes:
every node refuses every command while a primary is marked failed and not yet replaced).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import redis
import requests
from redis.cluster import RedisCluster

from tools.processes import ROOT, free_port, launch, stopped_afterwards, wait_until_listening

NODES = 6
STALL_S = 7.0
KEYS = [f"failover.{number}" for number in range(12)]
CLIENTS = 24


def _node(directory: Path, full_coverage: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port(also_free=10000)
    directory.mkdir()
    process = subprocess.Popen(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *("--dir", str(directory), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--cluster-node-timeout", "1000", "--cluster-require-full-coverage", full_coverage),
        ],
        stdout=subprocess.DEVNULL,
    )
    return process, port


def _wait(check: object, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(redis.RedisError):
            if check():  # type: ignore[operator]
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout_s}s")
        time.sleep(0.05)


@contextlib.contextmanager
def cluster_with_replicas(full_coverage: str) -> Iterator[list[tuple[subprocess.Popen[bytes], int]]]:
    with tempfile.TemporaryDirectory(prefix="ringsum-bench-cluster-") as directory:
        nodes = [_node(Path(directory) / f"node{index}", full_coverage) for index in range(NODES)]
        try:
            clients = [redis.Redis(port=port, socket_timeout=5) for _, port in nodes]
            for client in clients:
                _wait(client.ping, "redis-server start")
            subprocess.run(
                [
                    *("redis-cli", "--cluster", "create", *(f"127.0.0.1:{port}" for _, port in nodes)),
                    *("--cluster-replicas", "1", "--cluster-yes"),
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            _wait(lambda: all(b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in clients), "ok")
            _wait(
                lambda: all(
                    info.get("master_link_status") == "up"
                    for info in (client.info("replication") for client in clients)
                    if info["role"] == "slave"
                ),
                "replicas in sync",
                60,
            )
            yield nodes
        finally:
            for process, _ in nodes:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)
                process.terminate()
                process.wait(10)


def run(full_coverage: str, root: Path) -> dict[str, object]:
    with cluster_with_replicas(full_coverage) as nodes:
        uri = "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for _, port in nodes[:3])
        env = {name: value for name, value in os.environ.items() if not name.startswith("RINGSUM_")}
        env.update(RINGSUM_STORAGE_URI=uri, RINGSUM_REDIS_TIMEOUT="500ms", RINGSUM_DATA_DIR="")
        port = free_port()
        server = launch([sys.executable, "app.py", "--workers", "2", "--port", str(port)], env, port, cwd=root)
        wait_until_listening(server, timeout=30)
        with stopped_afterwards(server), requests.Session() as session:
            for key in KEYS:
                assert session.post(f"{server.url}/metric/{key}", json={"value": 1}, timeout=10).status_code == 200
            cluster = RedisCluster(host="127.0.0.1", port=nodes[0][1])
            primaries = {node.port for node in cluster.get_primaries()}
            stopped_process, stopped_port = next((process, port) for process, port in nodes if port in primaries)
            on_stopped = {key: cluster.get_node_from_key(f"ringsum:{{{key}}}:w").port == stopped_port for key in KEYS}
            cluster.close()
            stopped_process.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            answers: list[tuple[float, bool, int, float]] = []

            def client(offset: int) -> None:
                with requests.Session() as own:
                    while time.monotonic() - started < STALL_S:
                        key = KEYS[offset % len(KEYS)]
                        offset += 1
                        sent = time.monotonic()
                        try:
                            status = own.post(f"{server.url}/metric/{key}", json={"value": 1}, timeout=30).status_code
                        except requests.RequestException:
                            status = 0
                        answers.append((sent - started, on_stopped[key], status, time.monotonic() - sent))
                        time.sleep(0.05)

            clients = [threading.Thread(target=client, args=(offset,)) for offset in range(CLIENTS)]
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join()
            stopped_process.send_signal(signal.SIGCONT)

    def summary(stalled: bool) -> dict[str, object]:
        mine = [answer for answer in answers if answer[1] == stalled]
        statuses: dict[str, int] = {}
        for _, _, status, _ in mine:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        return {"answers": statuses, "slowest_s": round(max(seconds for *_, seconds in mine), 3)}

    served_again = [at for at, stalled, status, _ in answers if stalled and status == 200]
    return {
        "cluster_require_full_coverage": full_coverage,
        "keys_on_healthy_shards": summary(False),
        "keys_on_the_stopped_primary": summary(True),
        "stopped_shard_served_again_after_s": round(served_again[0], 2) if served_again else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_failover", description=__doc__)
    parser.add_argument("--full-coverage", choices=["yes", "no"], default="no")
    parser.add_argument("--root", type=Path, default=ROOT, help="the ringsum checkout to serve (default: this one)")
    args = parser.parse_args()
    print(json.dumps(run(args.full_coverage, args.root.resolve()), indent=2))


if __name__ == "__main__":
    main()
