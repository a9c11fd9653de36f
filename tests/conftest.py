"""Shared fixtures. ``app``/``client`` run every API test once per storage backend."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import freezegun.api
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from redis_servers import own_redis, redis_cluster, redis_server  # noqa: F401 - fixtures

from ringsum import create_app
from ringsum.core.clock import now_us
from ringsum.web.state import close_app

# In-process apps keep nothing (and write nothing to ./data) unless a test gives them a
# data dir; real servers get a fresh one each from tests/serving.py.
os.environ["RINGSUM_DATA_DIR"] = ""

CHECKOUT_DATA_DIR = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="session", autouse=True)
def nothing_writes_the_checkouts_data_dir() -> Iterator[None]:
    """The default data dir is ./data: a test that forgot to choose its own would write
    there (and two such would contend for its lock). Fails the run when one created it;
    it can tell only in a checkout without ./data (as CI's clean one), since a developer's
    `make run` may be writing an existing one meanwhile."""
    existed = CHECKOUT_DATA_DIR.exists()
    yield
    assert existed or not CHECKOUT_DATA_DIR.exists(), "a test wrote ./data: give it a data dir of its own"


# Every test using make_app/app/client runs on each; Redis ones start real servers
# (skipped with the reason when Redis cannot run here, failed under RINGSUM_REQUIRE_REDIS=1).
BACKENDS = ["memory", "redis", "cluster"]
REDIS_TEST_SETTINGS = {"RINGSUM_REDIS_TIMEOUT": "5s"}  # a loaded CI machine is no outage


def now_us_in_every_thread() -> int:
    """now_us, except that under freezegun every thread sees the frozen time. freezegun
    shows threads (the memory storage's sweeper) the real time, and a sweep at the real
    time would age out a frozen past at once: a test would lose keys when a sweep falls in it."""
    if freezegun.api.freeze_factories:
        return (freezegun.api.get_current_time() - datetime(1970, 1, 1)) // timedelta(microseconds=1)
    return now_us()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend under test; the Redis tests add theirs to BACKENDS."""
    return request.param


@pytest.fixture
def storage_uri(backend: str, request: pytest.FixtureRequest) -> str:
    """The backend's URI; a Redis backend is flushed first, so every test starts empty."""
    if backend == "memory":
        return "memory://"
    servers = request.getfixturevalue("redis_server" if backend == "redis" else "redis_cluster")
    servers.flushall()
    return servers.url


def _app_builder(storage_uri: str, settings: Mapping[str, str]) -> Iterator[Callable[..., Flask]]:
    """Yield a function that builds apps on ``storage_uri``, with ``settings`` and then
    its own RINGSUM_* overrides; every app built is closed afterwards."""
    apps: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        app = create_app(
            {"RINGSUM_STORAGE_URI": storage_uri, "RINGSUM_DATA_DIR": "", **settings, **overrides},
            clock=now_us_in_every_thread,
        )
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield build
    for app in apps:
        close_app(app)


@pytest.fixture
def make_app(backend: str, storage_uri: str) -> Iterator[Callable[..., Flask]]:
    """Build apps on the backend under test with RINGSUM_* overrides; closed afterwards.
    On Redis the app's clock replaces Redis TIME, so freezegun steers the window there too."""
    yield from _app_builder(storage_uri, REDIS_TEST_SETTINGS if backend != "memory" else {})


@pytest.fixture
def make_memory_app() -> Iterator[Callable[..., Flask]]:
    """Apps on memory storage only, for what only it has (RINGSUM_MAX_KEYS, the sweep,
    the data dir); closed afterwards."""
    yield from _app_builder("memory://", {})


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def redis_primaries(backend: str, storage_uri: str, request: pytest.FixtureRequest) -> Iterator[list[redis.Redis]]:
    """A direct client per primary of the Redis backend under test, to look at what is stored."""
    servers = request.getfixturevalue("redis_server" if backend == "redis" else "redis_cluster")
    clients = [node.client() for node in getattr(servers, "nodes", [servers])]
    yield clients
    for client in clients:
        client.close()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker more than the CPUs this process may use. Many tests wait
    on a real server, a browser or Redis; the extra worker keeps the CPUs busy meanwhile
    (on 2 cores, 3 workers ran the suite in 133-141 s against 147-149 s for 2)."""
    return len(os.sched_getaffinity(0)) + 1
