"""At start, Redis storage says how durable the Redis behind it is (docs/api.md#durability), when Redis lets it ask."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
from redis_servers import RedisServer, redis_missing, unavailable

from ringsum import create_app
from ringsum.web.state import close_app

LOGGER = "ringsum.storage.redis"
SLOW_MACHINE = {"RINGSUM_REDIS_TIMEOUT": "5s"}  # a loaded CI machine is no outage


@pytest.fixture
def started(tmp_path) -> Iterator:
    """Start a redis-server with extra arguments for one test; stopped afterwards."""
    if missing := redis_missing():
        unavailable(missing)
    servers: list[RedisServer] = []

    def start(*extra_args: str) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", *extra_args)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


def persistence_lines(caplog, app, timeout: float = 10.0) -> list[str]:
    """The persistence line(s) once the background check has finished."""
    deadline = time.monotonic() + timeout
    for thread in [t for t in threading.enumerate() if t.name == "ringsum-redis-persistence"]:
        thread.join(max(0.0, deadline - time.monotonic()))
    close_app(app)
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and "persistence" in r.getMessage()]


def test_the_persistence_mode_of_redis_is_logged_at_start(started, caplog) -> None:
    durable, volatile = started("--appendonly", "yes"), started()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        lines = persistence_lines(caplog, create_app({"RINGSUM_STORAGE_URI": durable.url, **SLOW_MACHINE}))
        assert len(lines) == 1 and "appendonly yes (appendfsync everysec)" in lines[0]
        assert "set appendonly yes" not in lines[0]
        caplog.clear()
        lines = persistence_lines(caplog, create_app({"RINGSUM_STORAGE_URI": volatile.url, **SLOW_MACHINE}))
        assert len(lines) == 1 and "appendonly no" in lines[0] and "set appendonly yes" in lines[0]


def test_nothing_more_is_said_when_config_is_not_allowed(started, caplog) -> None:
    locked = started("--rename-command", "CONFIG", "")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        app = create_app({"RINGSUM_STORAGE_URI": locked.url, **SLOW_MACHINE})
        assert app.test_client().post("/metric/k", json={"value": 1}).status_code == 200
        assert persistence_lines(caplog, app) == []
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
