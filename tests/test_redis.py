"""Redis storage beyond the shared API suite (which runs on Redis and Cluster too):
what only Redis has. Several app processes on one Redis, Redis's own clock, hash
tags and TTLs, scripts flushed, Redis stopped or hung, sums past 2**53, and the
Lua scripts checked against the memory storage on random histories.

Every server here is a real redis-server started by the tests (tests/redis_servers.py).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests
from flask import Flask
from freezegun import freeze_time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_servers import RedisServer, free_port, redis_missing, unavailable
from serving import ROOT, app_env, serving

from ringsum import create_app, load_settings
from ringsum.core.clock import WindowClock
from ringsum.storage import open_storage
from ringsum.storage import redis_layout as layout
from ringsum.storage.memory import MemoryStorage
from ringsum.storage.redis import LAYOUT_KEY, RedisStorage
from ringsum.web.state import close_app

MAX_VALUE = 2**53 - 1


@pytest.fixture(params=["redis", "cluster"])
def backend(request: pytest.FixtureRequest) -> str:
    """This module's API tests run on the two Redis backends only."""
    return request.param


@pytest.fixture
def redis_nodes(redis_primaries: list[redis.Redis]) -> list[redis.Redis]:
    return redis_primaries


def all_keys(nodes: list[redis.Redis]) -> set[str]:
    return {name.decode() for node in nodes for name in node.keys("*")}


def owner(nodes: list[redis.Redis], name: str) -> redis.Redis:
    """The node serving ``name``'s hash slot; any other Cluster node answers MOVED."""
    for node in nodes:
        try:
            node.type(name)
        except redis.exceptions.MovedError:
            continue
        return node
    raise AssertionError(f"no node serves {name}")


# -- what Redis stores -------------------------------------------------------------


def test_a_key_is_one_string_under_its_hash_tag_expiring_after_window_plus_one_tick(
    make_app: Callable[..., Flask], redis_nodes: list[redis.Redis]
) -> None:
    client = make_app(RINGSUM_WINDOW="90s", RINGSUM_RESOLUTION="500ms").test_client()
    with freeze_time("2026-01-01 12:00:00") as clock:
        assert client.post("/metric/visits", json={"value": 3}, headers={"Idempotency-Key": "once"}).status_code == 200
        names = all_keys(redis_nodes)
        assert {"ringsum:{visits}:w", "ringsum:index", LAYOUT_KEY} <= names
        node = owner(redis_nodes, "ringsum:{visits}:w")
        marker = next(name for name in names if name.startswith("ringsum:{visits}:i:") or name.startswith("ringsum:i:"))
        if len(redis_nodes) > 1:  # Cluster: the marker sits on the key's slot, with it
            assert owner(redis_nodes, marker) is node
        assert node.type("ringsum:{visits}:w") == b"string"
        assert 89_000 < node.pttl("ringsum:{visits}:w") <= 90_501  # 90 s + one 500 ms tick (+1 ms rounding)

        # Every write sets the TTL again, so a key in use never expires.
        node.pexpire("ringsum:{visits}:w", 1000)
        clock.tick(0.5)
        assert client.post("/metric/visits", json={"value": 4}).status_code == 200
        assert 89_000 < node.pttl("ringsum:{visits}:w") <= 90_501
        assert client.get("/metric/visits/sum").get_json() == {"value": 7}
        string = node.get("ringsum:{visits}:w")
        assert list(layout.entries(string)) == [(3_534_537_600, 3, 1), (3_534_537_601, 4, 1)]  # 500 ms slots


def test_exact_mode_keys_expire_after_the_window(
    make_app: Callable[..., Flask], redis_nodes: list[redis.Redis]
) -> None:
    client = make_app(RINGSUM_WINDOW="90s", RINGSUM_RESOLUTION="0").test_client()
    client.post("/metric/visits", json={"value": 3})
    node = owner(redis_nodes, "ringsum:{visits}:w")
    assert 89_000 < node.pttl("ringsum:{visits}:w") <= 90_002


@pytest.mark.parametrize("backend", ["redis"])
def test_idle_keys_vanish_from_redis_without_any_request(
    make_app: Callable[..., Flask], redis_nodes: list[redis.Redis]
) -> None:
    """Real time: a 1 s window, and nothing touches the key after the write."""
    client = make_app(RINGSUM_WINDOW="1s", RINGSUM_RESOLUTION="100ms").test_client()
    client.post("/metric/brief", json={"value": 1})
    assert all_keys(redis_nodes) == {"ringsum:{brief}:w", "ringsum:index", LAYOUT_KEY}
    deadline = time.monotonic() + 10
    while all_keys(redis_nodes) != {"ringsum:index", LAYOUT_KEY} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all_keys(redis_nodes) == {"ringsum:index", LAYOUT_KEY}  # the listing index has no TTL...
    assert client.get("/metric").get_json() == {"metrics": []}
    assert all_keys(redis_nodes) == {LAYOUT_KEY}  # ...a listing prunes what expired; the layout mark stays


def test_ringsum_leaves_other_data_in_the_same_redis_alone(client, redis_nodes: list[redis.Redis]) -> None:
    holder = owner(redis_nodes, "visits")
    holder.set("visits", "not ours")  # another application's key, of the same name
    client.post("/metric/visits", json={"value": 2})
    assert client.get("/metric").get_json() == {"metrics": [{"key": "visits", "value": 2}]}
    client.delete("/metric/visits")
    assert holder.get("visits") == b"not ours"


# -- exactness -----------------------------------------------------------------------


def test_sums_past_2_53_stay_exact(client) -> None:
    for _ in range(3):
        client.post("/metric/big", json={"value": MAX_VALUE})
    client.post("/metric", json=[{"key": "big", "value": MAX_VALUE}, {"key": "big", "value": -1}])
    expected = 4 * MAX_VALUE - 1
    assert client.get("/metric/big/sum").data == b'{"value": %d}' % expected
    assert client.get("/metric/big/sum?window=1s").data == b'{"value": %d}' % expected
    assert client.get("/metric?prefix=b").get_json() == {"metrics": [{"key": "big", "value": expected}]}
    assert sum(total for _, total in client.get("/metric/big/series?step=1m").get_json()["points"]) == expected


def test_a_sum_past_int64_is_refused_and_changes_nothing(client) -> None:
    client.post("/metric/big", json={"value": MAX_VALUE})
    too_much = [{"key": "big", "value": MAX_VALUE}] * 1100  # 1101 * (2**53 - 1) > 2**63
    response = client.post("/metric", json=too_much)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert "int64" in response.get_json()["detail"]
    assert client.get("/metric/big/sum").get_json() == {"value": MAX_VALUE}


def test_values_from_many_keys_land_on_every_cluster_node(client, redis_nodes: list[redis.Redis]) -> None:
    """A batch over many hash slots (one script per slot, one round trip per node)."""
    events = [{"key": f"k{index}", "value": index} for index in range(300)]
    assert client.post("/metric", json=events).get_json() == {"recorded": 300}
    assert client.post("/metric", json=events).get_json() == {"recorded": 300}
    if len(redis_nodes) > 1:
        assert all(node.dbsize() > 0 for node in redis_nodes)
    listed = client.get("/metric?limit=10000").get_json()["metrics"]
    assert listed == sorted(({"key": f"k{i}", "value": 2 * i} for i in range(300)), key=lambda m: m["key"])
    assert client.get("/metric?prefix=k29&limit=3").get_json()["metrics"] == [
        {"key": "k29", "value": 58},
        {"key": "k290", "value": 580},
        {"key": "k291", "value": 582},
    ]


# -- scripts and clocks ----------------------------------------------------------------


def test_scripts_are_loaded_again_after_script_flush(client, redis_nodes: list[redis.Redis]) -> None:
    client.post("/metric/a", json={"value": 1})
    for node in redis_nodes:
        node.script_flush()
    assert client.post("/metric/a", json={"value": 2}).status_code == 200
    for node in redis_nodes:
        node.script_flush()
    events = [{"key": f"k{index}", "value": 1} for index in range(100)]
    assert client.post("/metric", json=events).status_code == 200
    for node in redis_nodes:
        node.script_flush()
    assert client.get("/metric/a/sum").get_json() == {"value": 3}
    for node in redis_nodes:
        node.script_flush()
    assert len(client.get("/metric?limit=10000").get_json()["metrics"]) == 101


def test_without_a_test_clock_the_redis_server_clock_counts(storage_uri: str, redis_nodes: list[redis.Redis]) -> None:
    """Two apps (as on two hosts) whose own clocks say two hours passed still agree,
    because the window runs on Redis TIME, which barely moved."""
    writer, reader = create_app({"RINGSUM_STORAGE_URI": storage_uri}), create_app({"RINGSUM_STORAGE_URI": storage_uri})
    try:
        with freeze_time("2001-01-01 12:00:00") as clock:
            assert writer.test_client().post("/metric/skewed", json={"value": 5}).status_code == 200
            clock.move_to("2001-01-01 14:00:00")
            assert reader.test_client().get("/metric/skewed/sum").get_json() == {"value": 5}
        node = owner(redis_nodes, "ringsum:{skewed}:w")
        ((slot, _, _),) = layout.entries(node.get("ringsum:{skewed}:w"))
        assert abs(slot - node.time()[0]) <= 2  # the 1 s tick of the Redis server's TIME
    finally:
        close_app(writer)
        close_app(reader)


# -- Redis goes away -------------------------------------------------------------------


def assert_unavailable(response: requests.Response | object) -> None:
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json() if isinstance(response, requests.Response) else response.get_json()
    assert body["status"] == 503 and "Redis" in body["detail"]
    assert b"Traceback" not in (response.content if isinstance(response, requests.Response) else response.data)


@pytest.mark.process
def test_redis_stopped_is_a_503_and_serving_resumes_when_it_is_back(own_redis: RedisServer) -> None:
    with serving({"RINGSUM_STORAGE_URI": own_redis.url, "RINGSUM_REDIS_TIMEOUT": "300ms"}) as server:
        url, process = server.url, server.process
        assert requests.post(f"{url}/metric/a", json={"value": 3}).status_code == 200
        assert requests.get(f"{url}/readyz").status_code == 200

        own_redis.stop()
        assert_unavailable(requests.post(f"{url}/metric/a", json={"value": 3}))
        assert_unavailable(requests.get(f"{url}/metric/a/sum"))
        assert_unavailable(requests.get(f"{url}/readyz"))
        assert requests.get(f"{url}/healthz").json()["status"] == "ok"

        own_redis.start()  # an empty Redis on the same port, as after a crash
        assert requests.post(f"{url}/metric/a", json={"value": 4}).status_code == 200
        assert requests.get(f"{url}/metric/a/sum").json() == {"value": 4}
        assert requests.get(f"{url}/readyz").status_code == 200
        assert process.poll() is None


def test_a_hung_redis_times_out_into_a_503_and_recovers(own_redis: RedisServer) -> None:
    app = create_app({"RINGSUM_STORAGE_URI": own_redis.url, "RINGSUM_REDIS_TIMEOUT": "200ms"})
    client = app.test_client()
    try:
        assert client.post("/metric/a", json={"value": 1}).status_code == 200
        own_redis.process.send_signal(signal.SIGSTOP)
        try:
            assert_unavailable(client.post("/metric/a", json={"value": 1}))
            assert_unavailable(client.get("/readyz"))
        finally:
            own_redis.process.send_signal(signal.SIGCONT)
        # Requests fail at once until the breaker's probe finds Redis answering again.
        deadline = time.monotonic() + 5
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "not ready again 5 s after Redis woke up"
            time.sleep(0.02)
        # The timed-out write may have run when Redis woke up (its reply was lost):
        # a 503 means "unknown", never "surely not recorded".
        assert client.get("/metric/a/sum").get_json()["value"] in (1, 2)
        assert client.post("/metric/a", json={"value": 10}).status_code == 200
    finally:
        close_app(app)


def test_a_full_redis_is_a_507_and_changes_nothing(own_redis: RedisServer) -> None:
    app = create_app({"RINGSUM_STORAGE_URI": own_redis.url})
    client = app.test_client()
    try:
        assert client.post("/metric/a", json={"value": 1}).status_code == 200
        with own_redis.client() as direct:
            direct.config_set("maxmemory", "1")  # any write is now over the limit
            try:
                response = client.post("/metric", json=[{"key": "a", "value": 1}, {"key": "b", "value": 1}])
                assert response.status_code == 507
                assert "maxmemory" in response.get_json()["detail"]
                assert client.get("/metric").get_json() == {"metrics": [{"key": "a", "value": 1}]}
            finally:
                direct.config_set("maxmemory", "0")
        assert client.post("/metric/a", json={"value": 1}).status_code == 200
        assert client.get("/metric/a/sum").get_json() == {"value": 2}
    finally:
        close_app(app)


def test_a_rediss_uri_speaks_tls(tmp_path: Path) -> None:
    if redis_missing():
        unavailable(redis_missing())
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: it makes the test's certificate")
    server = RedisServer(tmp_path / "tls", tls=True)
    try:
        server.start()
    except (OSError, RuntimeError) as error:
        unavailable(f"could not start redis-server with TLS: {error}")
    secure = create_app({"RINGSUM_STORAGE_URI": server.url})
    plain = create_app({"RINGSUM_STORAGE_URI": f"redis://127.0.0.1:{server.port}/0", "RINGSUM_REDIS_TIMEOUT": "300ms"})
    try:
        assert secure.test_client().post("/metric/a", json={"value": 2}).status_code == 200
        assert secure.test_client().get("/metric/a/sum").get_json() == {"value": 2}
        assert secure.test_client().get("/readyz").status_code == 200
        assert_unavailable(plain.test_client().get("/metric/a/sum"))  # TLS only: plain text gets nowhere
    finally:
        close_app(secure)
        close_app(plain)
        server.stop()


@pytest.mark.parametrize("scheme", ["redis://127.0.0.1:{port}/0", "redis+cluster://127.0.0.1:{port}"])
def test_an_app_starts_while_redis_is_down_and_answers_503(scheme: str) -> None:
    app = create_app({"RINGSUM_STORAGE_URI": scheme.format(port=free_port())})
    client = app.test_client()
    try:
        assert_unavailable(client.get("/metric/a/sum"))
        assert_unavailable(client.post("/metric", json=[{"key": "a", "value": 1}]))
        assert_unavailable(client.get("/readyz"))
        assert client.get("/healthz").status_code == 200
    finally:
        close_app(app)


def test_a_bad_redis_uri_stops_the_start_in_one_line_without_the_password() -> None:
    env = app_env({"RINGSUM_STORAGE_URI": "redis://:hunter2@localhost:63x9/0"})
    done = subprocess.run(
        [sys.executable, "app.py", "--port", "0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "RINGSUM_STORAGE_URI" in done.stderr
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "uri",
    [
        "redis://localhost:6379/0?no_such_option=1",
        "redis://localhost:6379/0?socket_timeout=soon",
        "redis+cluster://localhost:7000,localhost",
        "redis+cluster://localhost:7000/3",
        "redis://localhost:6379/0?retry=3",  # ringsum never retries: a record that timed out may have run
        "redis+cluster://localhost:7000?retry=3",
    ],
)
def test_uris_that_cannot_work_are_refused_before_connecting(uri: str) -> None:
    with pytest.raises(Exception, match="RINGSUM_STORAGE_URI") as refused:
        load_settings({"RINGSUM_STORAGE_URI": uri})
    assert type(refused.value).__name__ == "ConfigError"


# -- several processes ---------------------------------------------------------------


@pytest.fixture(scope="module")
def two_apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, str, str]]:
    """Two ``python app.py`` processes (as on two hosts) sharing one Redis of their own."""
    missing = redis_missing()
    if missing:
        unavailable(missing)
    server = RedisServer(tmp_path_factory.mktemp("shared-redis"))
    try:
        server.start()
    except (OSError, RuntimeError) as error:
        unavailable(f"could not start redis-server: {error}")
    try:
        with (
            serving({"RINGSUM_STORAGE_URI": server.url}) as first,
            serving({"RINGSUM_STORAGE_URI": server.url}) as second,
        ):
            yield server, first.url, second.url
    finally:
        server.stop()


@pytest.mark.process
def test_two_processes_write_to_one_window_and_read_it_alike(two_apps: tuple[RedisServer, str, str]) -> None:
    server, first, second = two_apps
    server.flushall()
    assert requests.post(f"{first}/metric/visits", json={"value": 3}).json() == {}
    assert requests.post(f"{second}/metric/visits", data="value=4").json() == {}
    batch = [{"key": "visits", "value": 5}, {"key": "other", "value": MAX_VALUE}]
    assert requests.post(f"{second}/metric", json=batch).json() == {"recorded": 2}
    assert requests.post(f"{first}/metric/other", json={"value": MAX_VALUE}).status_code == 200
    for url in (first, second):
        assert requests.get(f"{url}/metric/visits/sum").json() == {"value": 12}
        assert requests.get(f"{url}/metric/other/sum").content == b'{"value": %d}' % (2 * MAX_VALUE)
        assert requests.get(f"{url}/metric").json()["metrics"] == [
            {"key": "other", "value": 2 * MAX_VALUE},
            {"key": "visits", "value": 12},
        ]
    assert requests.delete(f"{first}/metric/visits").status_code == 204
    assert requests.get(f"{second}/metric/visits/sum").json() == {"value": 0}


@pytest.mark.process
def test_many_threads_over_two_processes_lose_nothing(two_apps: tuple[RedisServer, str, str]) -> None:
    server, first, second = two_apps
    server.flushall()
    threads, posts = 8, 100

    def post_many(worker: int) -> int:
        recorded = 0
        with requests.Session() as session:
            for index in range(posts):
                url = (first, second)[(worker + index) % 2]
                value = worker * 1000 + index
                if index % 10 == 0:
                    response = session.post(f"{url}/metric", json=[{"key": "hits", "value": value}] * 3)
                    recorded += 3 * value
                else:
                    response = session.post(f"{url}/metric/hits", json={"value": value})
                    recorded += value
                assert response.status_code == 200
        return recorded

    with ThreadPoolExecutor(threads) as pool:
        expected = sum(pool.map(post_many, range(threads)))
    assert requests.get(f"{first}/metric/hits/sum").json() == {"value": expected}
    assert requests.get(f"{second}/metric/hits/sum").json() == {"value": expected}


def _worker_processes(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in children.read_text().split()] if children.exists() else []


@pytest.mark.process
def test_workers_2_serve_one_window_on_redis(own_redis: RedisServer) -> None:
    with serving({"RINGSUM_STORAGE_URI": own_redis.url}, workers=2) as server:
        url = server.url
        if Path(f"/proc/{server.process.pid}").exists():
            assert len(_worker_processes(server.process.pid)) == 2

        def post_many(worker: int) -> None:
            with requests.Session() as session:
                for _ in range(50):
                    assert session.post(f"{url}/metric/hits", json={"value": worker}).status_code == 200

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(post_many, range(1, 5)))
        assert requests.get(f"{url}/metric/hits/sum").json() == {"value": 50 * (1 + 2 + 3 + 4)}


# -- the Lua scripts against the memory storage ----------------------------------------

T0 = 1_767_225_600_000_000  # 2026-01-01 in µs: exact-mode slots this size must stay exact

KEYS = st.sampled_from(["a", "b", "ab"])
VALUES = st.one_of(st.integers(-50, 50), st.integers(-MAX_VALUE, MAX_VALUE))
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("record"), KEYS, VALUES),
        st.tuples(st.just("record_many"), st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=4)),
        # Moves that land on the window's edges: a share of the window, plus or minus
        # a few ticks, plus or minus 1 µs; negative ones step the clock back.
        st.tuples(
            st.just("advance"),
            st.sampled_from([-10, 0, 10, 50, 100, 100]),
            st.sampled_from([-2, -1, 0, 0, 1]),
            st.sampled_from([-1, 0, 1]),
        ),
        st.tuples(st.just("total"), KEYS, st.sampled_from([1, 10, 50, 99, 100])),  # % of the window
        st.tuples(st.just("series"), KEYS, st.integers(1, 4)),
        st.tuples(
            st.just("keys"), st.sampled_from(["", "a", "b", "c"]), st.integers(1, 3), st.sampled_from(["", "a", "b"])
        ),
        st.tuples(st.just("delete"), KEYS),
    ),
    max_size=30,
)


@pytest.mark.parametrize(
    ("window", "resolution", "ring_at"),
    [("10s", "1s", None), ("10s", "1s", 4), ("10s", "0", None), ("9s", "1500ms", None), ("700ms", "7ms", None)],
)
def test_redis_storage_answers_as_memory_storage_on_any_history(
    redis_server: RedisServer, window: str, resolution: str, ring_at: int | None
) -> None:
    """``ring_at``: the slots a key holds before it turns from a log into a ring (and back
    at a quarter of it), when not the default (1 slot here for 10 s of 1 s ticks)."""
    redis_server.flushall()
    config = load_settings(
        {"RINGSUM_STORAGE_URI": redis_server.url, "RINGSUM_WINDOW": window, "RINGSUM_RESOLUTION": resolution}
    )
    now = [T0]
    on_redis = open_storage(config.storage_uri, config.storage_options(), clock=lambda: now[0])
    assert isinstance(on_redis, RedisStorage)
    if ring_at is not None:
        on_redis._ring_at = ring_at

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(start=st.integers(0, 10**9), operations=OPERATIONS)
    def same_answers(start: int, operations: list[tuple]) -> None:
        redis_server.flushall()
        now[0] = T0 + start
        on_redis._window = WindowClock(lambda: now[0], None)  # each example is a new start
        in_memory = MemoryStorage(config.storage_options(), clock=lambda: now[0])
        on_redis._window(), in_memory._clock()  # both start now (the sweeper may read it first)
        try:
            for name, *args in operations:
                if name == "advance":
                    percent, ticks, micros = args
                    now[0] += config.window_us * percent // 100 + ticks * config.slot_us + micros
                    # Both window clocks see every time (the memory storage's sweeper may
                    # read any of them): a clock read at a time never goes back below it.
                    on_redis._window(), in_memory._clock()
                elif name == "total":
                    key, percent = args
                    window_us = None if percent == 100 else max(1, config.window_us * percent // 100)
                    assert on_redis.total(key, window_us) == in_memory.total(key, window_us)
                elif name == "series":
                    key, steps = args
                    step_us = max(config.slot_us, config.window_us // steps // config.slot_us * config.slot_us)
                    assert on_redis.series(key, step_us) == in_memory.series(key, step_us)
                elif name == "keys":
                    assert on_redis.keys(*args) == in_memory.keys(*args)
                else:
                    getattr(on_redis, name)(*args)
                    getattr(in_memory, name)(*args)
                # After every step: every key's total, and the same entries held.
                assert on_redis.keys() == in_memory.keys()
                assert on_redis.count()[1] == in_memory.stats().entries
        finally:
            in_memory.close()

    try:
        same_answers()
    finally:
        on_redis.close()


def test_the_key_layout_is_recorded_and_a_newer_one_refused(make_app, redis_nodes: list[redis.Redis]) -> None:
    """ringsum marks the keyspace with its key layout on first connection; data in a layout
    a newer ringsum wrote is refused (a 503 that says so), never misread or overwritten."""
    client = make_app().test_client()
    assert client.post("/metric/k", json={"value": 1}).status_code == 200
    holder = owner(redis_nodes, LAYOUT_KEY)
    assert holder.get(LAYOUT_KEY) == b"2"

    holder.set(LAYOUT_KEY, "3")
    newer = make_app().test_client()  # a ringsum started after the newer one wrote
    response = newer.post("/metric/k", json={"value": 5})
    assert response.status_code == 503 and response.mimetype == "application/problem+json"
    assert "key layout '3'" in response.get_json()["detail"] and "newer ringsum" in response.get_json()["detail"]
    assert client.get("/metric/k/sum").get_json() == {"value": 1}  # nothing recorded
