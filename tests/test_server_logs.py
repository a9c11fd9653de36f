"""What ``python app.py`` says about itself: a "stopped" line last, in text and in JSON;
lines about the whole server (Redis's persistence, Redis unreachable) said by one
worker, not by each of ``--workers N`` (ringsum.core.said_once). Real processes."""

from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from serving import Server, free_port, serving
from test_access_log import lines_matching
from test_server import wait_for, workers_of

pytestmark = pytest.mark.process


def log_lines(server: Server) -> list[str]:
    """The output without the access log (RINGSUM_ACCESS_LOG=off in these tests)."""
    return [line for line in server.output().splitlines() if line.strip()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_says_stopped_last(sig: signal.Signals) -> None:
    with serving({"RINGSUM_ACCESS_LOG": "off"}) as server:
        requests.post(f"{server.url}/metric/a", json={"value": 1}, timeout=10)
        assert server.stop(sig) == 0
    lines = log_lines(server)
    assert lines[-1].endswith(f"INFO ringsum: ringsum stopped ({sig.name})"), lines
    assert sum("stopped" in line for line in lines) == 1


def test_the_stopped_line_in_json() -> None:
    with serving({"RINGSUM_ACCESS_LOG": "off", "RINGSUM_LOG_FORMAT": "json"}) as server:
        assert server.stop() == 0
    entries = [json.loads(line) for line in log_lines(server)]
    assert entries[-1]["message"] == "ringsum stopped (SIGTERM)" and entries[-1]["level"] == "INFO"
    assert entries[-1]["logger"] == "ringsum"


def test_workers_3_say_redis_persistence_once_and_stop_once(redis_server) -> None:
    redis_server.flushall()
    env = {"RINGSUM_STORAGE_URI": redis_server.url, "RINGSUM_ACCESS_LOG": "off"}
    with serving(env, workers=3) as server:
        wait_for(lambda: len(workers_of(server)) == 3, what="3 workers")
        lines_matching(server, "Redis persistence at")  # said off the start path: wait for it
        # A SIGHUP replaces every worker: the new ones do not say it again either.
        server.process.send_signal(signal.SIGHUP)
        old = set(workers_of(server))
        wait_for(lambda: len(set(workers_of(server)) - old) == 3, what="3 new workers")
        requests.get(f"{server.url}/metric/a/sum", timeout=10)
        assert server.stop() == 0
    lines = log_lines(server)
    assert sum("Redis persistence at" in line for line in lines) == 1, lines
    assert sum("ringsum stopped (SIGTERM)" in line for line in lines) == 1
    assert lines[-1].endswith("ringsum stopped (SIGTERM)")


def test_workers_3_say_redis_is_unreachable_once_not_once_each() -> None:
    """Every worker fails its requests; the warning is said once per 10 s over all of them."""
    env = {"RINGSUM_STORAGE_URI": f"redis://127.0.0.1:{free_port()}/0", "RINGSUM_ACCESS_LOG": "off"}
    with serving(env, workers=3) as server:
        wait_for(lambda: len(workers_of(server)) == 3, what="3 workers")

        def ask(_: int) -> int:
            url = f"{server.url}/metric/a/sum"
            return requests.get(url, headers={"Connection": "close"}, timeout=10).status_code

        with ThreadPoolExecutor(6) as pool:
            assert set(pool.map(ask, range(60))) == {503}
        assert server.stop() == 0
    assert sum("is unavailable" in line for line in log_lines(server)) == 1, server.output()
