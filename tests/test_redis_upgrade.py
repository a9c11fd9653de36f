"""Upgrading Redis from key layout 1 (ringsum 0.2) to layout 2, on Redis and Cluster.

Layout-1 data is written by the scripts of 0.2 themselves, kept verbatim in
tests/fixtures/redis_layout1/. A ringsum of layout 2 refuses it with one line naming
the upgrade command; after ``python -m ringsum.storage.upgrade`` every sum, sub-window
sum, series, listing and idempotency marker answers as a memory storage fed the same
history does, and keeps doing so as writes go on.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from ringsum import create_app, load_settings
from ringsum.inputs.idempotency import fingerprint
from ringsum.storage import Marker, StorageIncompatible, open_storage, storage_class
from ringsum.storage import redis_layout as layout
from ringsum.storage.memory import MemoryStorage
from ringsum.storage.redis import INDEX, LAYOUT_KEY, RedisStorage, marker_key
from ringsum.storage.upgrade import OLDER_CLIENT_NAME, UpgradeRefused, upgrade
from ringsum.web.state import close_app

ROOT = Path(__file__).resolve().parent.parent
LAYOUT_1_SCRIPTS = Path(__file__).parent / "fixtures" / "redis_layout1"
T0 = 1_767_225_600_000_000
MAX_VALUE = 2**53 - 1


@pytest.fixture(params=["redis", "cluster"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def direct(backend: str, storage_uri: str, request: pytest.FixtureRequest) -> Iterator[redis.Redis | RedisCluster]:
    """A redis-py client of the (flushed) Redis or Cluster under test."""
    servers = request.getfixturevalue("redis_server" if backend == "redis" else "redis_cluster")
    node = getattr(servers, "nodes", [servers])[0]
    client = redis.Redis(port=node.port) if backend == "redis" else RedisCluster(host="127.0.0.1", port=node.port)
    yield client
    client.close()


class Layout1:
    """Writes as ringsum 0.2 did: its record script, one call per metric key (each on
    its own slot), the index joined by a follow-up, markers on the key's slot on Cluster."""

    def __init__(self, client: redis.Redis | RedisCluster, settings: str, cluster: bool) -> None:
        text = (LAYOUT_1_SCRIPTS / "common.lua").read_text() + "\n" + (LAYOUT_1_SCRIPTS / "record.lua").read_text()
        self.client, self.script, self.cluster = client, client.register_script(text), cluster
        self.config = load_settings({"RINGSUM_STORAGE_URI": "memory://", **settings_of(settings)})
        client.set(LAYOUT_KEY, 1)

    def record(self, key: str, value: int, now_us: int, marker: Marker | None = None) -> None:
        config = self.config
        ttl_ms = str(-(-(config.window_us + config.slot_us) // 1000) + 1)
        keys = [*layout.layout_1_keys(key)]
        packed = b""
        if marker is not None:
            keys.append(marker_key(marker.id, key if self.cluster else None))
            packed = marker.fingerprint + b"%03d" % marker.status + marker.body
        span = config.window_us // config.slot_us
        result = self.script(keys, [config.slot_us, span, now_us, ttl_ms, packed, str(value)])
        if result[1:]:
            self.client.zadd(INDEX, {key: 0})


def settings_of(name: str) -> dict[str, str]:
    window, resolution = name.split("/")
    return {"RINGSUM_WINDOW": window, "RINGSUM_RESOLUTION": resolution}


def history(window_us: int, slot_us: int) -> list[tuple[int, str, int]]:
    """(time, key, value), in time order: a busy key (200 values over most of the window:
    a ring once converted in tick mode), a sparse key, one whose value ages out before
    the upgrade, one past 2**53, and a value booked after the clock stepped back."""
    gap_us = window_us * 9 // 10 // 200
    events = [(T0 + index * gap_us, "busy", index % 7 - 2) for index in range(200)]
    events += [(T0 - window_us // 2, "gone", 5)]
    events += [(T0 + window_us // 2 + at, "sparse", 3) for at in (0, slot_us // 2, 3 * slot_us)]
    events += [(T0 + window_us - 5 * slot_us + at * slot_us, "big", MAX_VALUE) for at in range(4)]
    events.sort()
    latest = events[-1][0]
    events += [(latest - 3 * slot_us, "busy", 1000)]  # the clock stepped back: booked into the newest slot
    return events


@pytest.mark.parametrize("settings", ["60s/1s", "10s/0"], ids=["tick", "exact"])
def test_data_written_by_layout_1_reads_the_same_after_the_upgrade(
    storage_uri: str, backend: str, direct: redis.Redis | RedisCluster, settings: str
) -> None:
    old = Layout1(direct, settings, cluster=backend == "cluster")
    config = load_settings({"RINGSUM_STORAGE_URI": storage_uri, **settings_of(settings)})
    now = [T0]
    memory = MemoryStorage(config.storage_options(), clock=lambda: now[0])
    events = history(config.window_us, config.slot_us)
    marker = Marker("retry-me", fingerprint("POST", "/metric/sparse", b'{"value": 3}'), 200, b"{}")
    for at, key, value in events:
        now[0] = at
        old.record(key, value, at)
        memory.record(key, value)
    old.record("sparse", 3, now[0], marker)
    memory.record("sparse", 3, marker)
    now[0] += config.slot_us * 3

    on_redis = open_storage(config.storage_uri, config.storage_options(), clock=lambda: now[0])
    assert isinstance(on_redis, RedisStorage)
    try:
        with pytest.raises(StorageIncompatible, match=r"ringsum\.storage\.upgrade"):
            on_redis.total("busy")
        converter = type(on_redis)(
            config.storage_uri, config.storage_options(), clock=lambda: now[0], check_layout=False
        )
        try:
            done = upgrade(converter)
        finally:
            converter.close()
        assert (done.converted, done.aged_out, done.found_layout) == (3, 1, "1")
        assert not [name for name in all_names(direct) if name.endswith((":h", ":z"))]
        busy = direct.get(layout.string_key("busy"))
        assert layout.header(busy).form == (b"R" if settings == "60s/1s" else b"L")

        def same_answers() -> None:
            """Same sums; the same counts, except that a count reaching a slot written by
            layout 1 (which kept none) is not known (None), never made up."""
            assert on_redis.keys() == memory.keys()
            assert on_redis.count()[1] == memory.stats().entries
            for key in ("busy", "sparse", "big", "gone", "new"):
                for share in (None, 2, 10):
                    window_us = None if share is None else config.window_us // share
                    assert on_redis.total(key, window_us) == memory.total(key, window_us), (key, share)
                    found, expected = on_redis.window_stats(key, window_us), memory.window_stats(key, window_us)
                    assert found.sum == expected.sum and found.count in (None, expected.count)
                step_us = config.window_us // 4
                found_series, expected_series = on_redis.series(key, step_us, True), memory.series(key, step_us, True)
                assert (found_series.start_us, found_series.sums) == (expected_series.start_us, expected_series.sums)
                pairs = zip(found_series.counts, expected_series.counts, strict=True)
                assert all(found in (None, expected) for found, expected in pairs)

        same_answers()
        assert on_redis.window_stats("busy").count is None  # written by layout 1: not known
        assert on_redis.window_stats("gone").count == 0  # aged out: nothing, so 0
        assert on_redis.record("sparse", 3, marker) == marker  # the retry finds its layout-1 marker
        for step in range(90):  # writes go on for two windows, and every value ages out
            now[0] += config.window_us // 40
            for storage in (on_redis, memory):
                storage.record_many([("busy", step), ("new", 1)])
            if step % 15 == 0:
                same_answers()
        same_answers()
        for key in ("busy", "new"):  # every slot of layout 1 aged out: counts are known again
            assert on_redis.window_stats(key) == memory.window_stats(key) and memory.window_stats(key).count
            step_us = config.window_us // 4
            assert on_redis.series(key, step_us, True) == memory.series(key, step_us, True)
    finally:
        on_redis.close()
        memory.close()


def all_names(client: redis.Redis | RedisCluster) -> list[str]:
    return [name.decode() for name in client.scan_iter(match="ringsum:*")]


def test_a_ringsum_finding_layout_1_answers_503_naming_the_upgrade_and_logs_it_once(
    storage_uri: str, direct: redis.Redis | RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    direct.set(LAYOUT_KEY, 1)
    app = create_app({"RINGSUM_STORAGE_URI": storage_uri, "RINGSUM_DATA_DIR": ""})
    try:
        with caplog.at_level(logging.ERROR, logger="ringsum.storage.redis"):
            for _ in range(3):
                response = app.test_client().post("/metric/k", json={"value": 1})
                assert response.status_code == 503 and response.mimetype == "application/problem+json"
                detail = response.get_json()["detail"]
                assert "key layout '1'" in detail and "`python -m ringsum.storage.upgrade`" in detail
        logged = [
            r.getMessage() for r in caplog.records if r.name == "ringsum.storage.redis" and r.levelno >= logging.ERROR
        ]
        assert logged == [detail]
        assert "\n" not in detail
    finally:
        close_app(app)
    assert direct.get(LAYOUT_KEY) == b"1"  # nothing written, the mark left alone
    assert not direct.exists(layout.string_key("k"))


def test_the_upgrade_waits_for_older_ringsums_to_stop(storage_uri: str, direct: redis.Redis | RedisCluster) -> None:
    direct.set(LAYOUT_KEY, 1)
    config = load_settings({"RINGSUM_STORAGE_URI": storage_uri})
    storage = storage_class(storage_uri)(storage_uri, config.storage_options(), check_layout=False)
    nodes = direct.get_primaries() if isinstance(direct, RedisCluster) else [None]
    older = [
        redis.Redis(port=node.port if node else direct.connection_pool.connection_kwargs["port"]) for node in nodes
    ]
    try:
        older[-1].client_setname(OLDER_CLIENT_NAME)  # an older ringsum, still connected to one node
        with pytest.raises(UpgradeRefused, match="stop every older ringsum first, or pass --force"):
            upgrade(storage)
        assert direct.get(LAYOUT_KEY) == b"1"
        assert upgrade(storage, force=True).found_layout == "1"
        assert direct.get(LAYOUT_KEY) == b"2"
    finally:
        for client in older:
            client.close()
        storage.close()


@pytest.mark.parametrize("backend", ["redis"])
def test_the_upgrade_command_says_what_it_did_in_one_line(storage_uri: str, direct: redis.Redis) -> None:
    old = Layout1(direct, "1h/1s", cluster=False)
    old.record("visits", 3, time.time_ns() // 1000)  # the command runs on Redis TIME
    env = {**os.environ, "RINGSUM_STORAGE_URI": storage_uri, "RINGSUM_WINDOW": "1h", "RINGSUM_RESOLUTION": "1s"}
    command = [sys.executable, "-m", "ringsum.storage.upgrade"]

    def run(extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, cwd=ROOT, env={**env, **(extra or {})}, capture_output=True, text=True, timeout=60
        )

    done = run()
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and "layout 1: 1 keys converted, 0 whose values" in done.stdout
    assert "layout 2 now" in done.stdout
    assert direct.exists(layout.string_key("visits")) and not direct.exists(*layout.layout_1_keys("visits"))
    again = run()
    assert again.returncode == 0 and "was layout 2: 0 keys converted" in again.stdout

    direct.set(LAYOUT_KEY, 3)
    newer = run()
    assert newer.returncode == 2 and newer.stderr.count("\n") == 1 and "run a newer ringsum" in newer.stderr
    memory = run({"RINGSUM_STORAGE_URI": "memory://"})
    assert memory.returncode == 2 and "not Redis: nothing to upgrade" in memory.stderr


def test_a_fresh_redis_is_marked_layout_2(make_app: Callable, direct: redis.Redis | RedisCluster) -> None:
    assert make_app().test_client().post("/metric/k", json={"value": 1}).status_code == 200
    assert direct.get(LAYOUT_KEY) == b"2"
