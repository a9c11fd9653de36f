"""Redis stalled, not gone: SIGSTOP, like ``DEBUG SLEEP``, leaves the kernel accepting
connections while nothing answers, so every call waits out ``RINGSUM_REDIS_TIMEOUT``.

Requests run one at a time on each worker's loop, so before the breaker
(``ringsum/storage/breaker.py``) every request queued behind a stalled call waited out
its own timeout in turn (issue 22: 24 clients, answers after up to 7.9 s with a 1 s
timeout, /readyz a 200 after 7.9 s). Now the first timeout opens the node's breaker:
every answer comes within the timeout and a margin, /readyz says not ready at once, and
the service comes back by itself once Redis answers. On Cluster the breaker is per
node: a stalled shard fails its own keys only.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from redis_servers import RedisClusterServers, RedisServer, redis_missing, unavailable
from serving import serving

from ringsum import create_app
from ringsum.storage.redis import INDEX
from ringsum.storage.redis_cluster import RedisClusterStorage
from ringsum.web.state import close_app, storage

TIMEOUT = "500ms"
BOUND_S = 2.5  # timeout + a generous margin for a loaded 2-core machine
READY_BOUND_S = 1.0
CLIENTS = 24


@pytest.fixture
def stallable_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    """A 3-primary Cluster of this test's own, whose nodes wait 30 s before taking a
    stalled one for failed (so the stall stays a stall, not a cluster outage)."""
    missing = redis_missing()
    if missing:
        unavailable(missing)
    cluster = RedisClusterServers(tmp_path / "cluster", node_timeout_ms=30_000)
    try:
        cluster.start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        unavailable(f"could not start a Redis Cluster: {error}")
    yield cluster
    cluster.stop()


@contextmanager
def stalled(server: RedisServer) -> Iterator[None]:
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.process.send_signal(signal.SIGCONT)


def timed(method: str, url: str, **kwargs: Any) -> tuple[float, requests.Response]:
    """Seconds to the answer, on a new connection, and the answer."""
    started = time.monotonic()
    response = requests.request(method, url, timeout=30, **kwargs)
    return time.monotonic() - started, response


def assert_fast_503(seconds: float, response: requests.Response, bound: float = BOUND_S) -> None:
    assert seconds < bound, f"answered after {seconds:.2f}s"
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    assert response.headers["Content-Type"] == "application/problem+json"
    assert "Redis" in response.json()["detail"]


def wait_until_ready(url: str, within_s: float = 5.0) -> float:
    """Seconds until /readyz says 200 again."""
    started = time.monotonic()
    while requests.get(f"{url}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() - started < within_s, f"not ready {within_s}s after Redis answers again"
        time.sleep(0.02)
    return time.monotonic() - started


@pytest.mark.process
def test_24_clients_during_a_stall_get_503s_within_the_timeout_and_readyz_says_not_ready_at_once(
    own_redis: RedisServer,
) -> None:
    env = {"RINGSUM_STORAGE_URI": own_redis.url, "RINGSUM_REDIS_TIMEOUT": TIMEOUT}
    with serving(env, workers=2) as server, ThreadPoolExecutor(CLIENTS + 1) as pool:
        url = server.url
        for _ in range(20):  # new connections: both workers connect to Redis
            assert requests.post(f"{url}/metric/stalled", json={"value": 1}, timeout=10).status_code == 200

        with stalled(own_redis):
            for wave in range(2):  # the first meets the stall; the second comes while probes run
                posts = [pool.submit(timed, "POST", f"{url}/metric/stalled", json={"value": 1}) for _ in range(CLIENTS)]
                ready = pool.submit(timed, "GET", f"{url}/readyz")
                for answered in posts:
                    assert_fast_503(*answered.result())
                assert_fast_503(*ready.result(), bound=READY_BOUND_S if wave else BOUND_S)
                time.sleep(0.3)
            for _ in range(4):  # whichever worker answers, at once
                assert_fast_503(*timed("GET", f"{url}/readyz"), bound=READY_BOUND_S)
            assert requests.get(f"{url}/healthz", timeout=10).status_code == 200

        wait_until_ready(url)
        assert requests.post(f"{url}/metric/stalled", json={"value": 1}, timeout=10).status_code == 200
        total = server.total("stalled")
        # A write that timed out may have run once Redis woke up (a 503 means "unknown"),
        # but only the first in each worker was sent: the breaker sent none of the others.
        assert 21 <= total <= 23
        assert "did not answer within 0.5s" in server.output()
        assert "answers again" in server.output()


def test_a_stalled_cluster_shard_fails_its_own_keys_only(stallable_cluster: RedisClusterServers) -> None:
    app = create_app({"RINGSUM_STORAGE_URI": stallable_cluster.url, "RINGSUM_REDIS_TIMEOUT": TIMEOUT})
    client = app.test_client()
    try:
        keys = [f"shard.{number}" for number in range(30)]
        for key in keys:  # each key exists (and is listed) before the stall
            assert client.post(f"/metric/{key}", json={"value": 1}).status_code == 200
        cluster_storage = storage(app)
        assert isinstance(cluster_storage, RedisClusterStorage)
        cluster = cluster_storage._connect()
        # The node of the listing index: new keys elsewhere must not wait for it either.
        index_port = cluster.get_node_from_key(INDEX).port
        [stalled_node] = [node for node in stallable_cluster.nodes if node.port == index_port]

        def on_stalled_node(key: str) -> bool:
            return cluster.get_node_from_key(f"ringsum:{{{key}}}:w").port == stalled_node.port

        healthy = [key for key in keys if not on_stalled_node(key)]
        assert healthy and len(healthy) < len(keys)

        with stalled(stalled_node):
            for key in keys:
                started = time.monotonic()
                response = client.post(f"/metric/{key}", json={"value": 1})
                seconds = time.monotonic() - started
                assert seconds < BOUND_S, f"{key}: answered after {seconds:.2f}s"
                assert response.status_code == (503 if on_stalled_node(key) else 200), (key, response.get_json())
            for key in healthy:
                started = time.monotonic()
                assert client.get(f"/metric/{key}/sum").get_json() == {"value": 2}
                assert time.monotonic() - started < 0.5
            new_keys = [f"new.{number}" for number in range(20)]
            for key in filter(lambda key: not on_stalled_node(key), new_keys):
                started = time.monotonic()
                assert client.post(f"/metric/{key}", json={"value": 5}).status_code == 200
                assert time.monotonic() - started < 0.5  # its index entry is left to the census
            started = time.monotonic()
            assert client.get("/readyz").status_code == 503
            assert time.monotonic() - started < READY_BOUND_S

        deadline = time.monotonic() + 5
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "not ready 5 s after the shard answers again"
            time.sleep(0.02)
        for key in keys:
            expected = (1, 2) if on_stalled_node(key) else (2,)  # the timed-out write may have run
            assert client.get(f"/metric/{key}/sum").get_json()["value"] in expected
    finally:
        close_app(app)
