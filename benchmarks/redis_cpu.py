"""``python -m benchmarks.redis_cpu``: where the CPU of a single POST goes, memory storage
against ``--workers 2`` on Redis: per request, in the server's processes and in
redis-server, read from /proc while wrk drives each for a few seconds. Also what one
bare loopback round trip and one redis-py call cost this machine."""

from __future__ import annotations

import argparse
import os
import socket
import time
from pathlib import Path

import redis

from tools.processes import descendants

from .harness import ringsum_server, wrk
from .http_load import POST_BODY, redis_server


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _per_call(action, count: int = 3000) -> tuple[float, float]:
    for _ in range(300):
        action()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        action()
    return (time.perf_counter() - wall) / count * 1e6, (time.process_time() - cpu) / count * 1e6


def main(seconds: float = 5) -> None:
    with redis_server() as (uri, redis_pid):
        port = int(uri.rsplit(":", 1)[1].split("/")[0])
        for name, env, workers in (("memory", {}, 1), ("redis --workers 2", {"RINGSUM_STORAGE_URI": uri}, 2)):
            with ringsum_server(workers=workers, env=env) as server:
                pids = [server.process.pid, *descendants(server.process.pid), redis_pid]
                before = {pid: cpu_seconds(pid) for pid in pids}
                load = wrk(f"{server.url}/metric/post", seconds=seconds, body=POST_BODY)
                requests = load.requests_per_s * seconds
                app_us = sum(cpu_seconds(pid) - before[pid] for pid in pids[:-1]) / requests * 1e6
                redis_us = (cpu_seconds(redis_pid) - before[redis_pid]) / requests * 1e6
                print(
                    f"{name:>18}: {load.requests_per_s:7,.0f} POST/s; CPU per request: app {app_us:4.0f} µs, redis-server {redis_us:3.0f} µs"
                )
        client = redis.Redis.from_url(uri)
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def ping() -> None:
                raw.sendall(b"*1\r\n$4\r\nPING\r\n")
                raw.recv(64)

            for name, action in (("bare socket PING", ping), ("redis-py PING", client.ping)):
                wall, cpu = _per_call(action)
                print(f"{name:>18}: {wall:4.0f} µs round trip, {cpu:3.0f} µs of CPU in the caller")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.redis_cpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5, help="how long wrk drives each server (default 5)")
    main(parser.parse_args().seconds)
