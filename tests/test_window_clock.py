"""Time never runs backward inside a window: the wall clock stepped back and forth
(``ManualClock.step``: NTP, an operator) while time passes (``advance``), on every
storage, through HTTP; then the same after a restart (memory with a data dir)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import requests
from conftest import REDIS_TEST_SETTINGS
from flask import Flask
from flask.testing import FlaskClient
from helpers import ManualClock, crash, memory_storage, total
from serving import serving

from ringsum import create_app
from ringsum.config import read_settings
from ringsum.core.clock import STEP_US, WindowClock, now_us
from ringsum.storage import Marker, open_storage
from ringsum.storage.memory import MemoryStorage
from ringsum.web.state import close_app

T0 = 1_767_225_600_000_000  # 2026-01-01 00:00:00 UTC, on a tick
SECOND, MINUTE, HOUR = 1_000_000, 60_000_000, 3_600_000_000


# -- the clock itself --------------------------------------------------------------


def test_a_step_back_is_not_followed_the_window_goes_on_in_real_time() -> None:
    wall = ManualClock(T0)
    clock = WindowClock.of(wall)
    assert clock() == T0
    wall.advance(5 * MINUTE)
    wall.step(-10 * MINUTE)
    assert clock() == T0 + 5 * MINUTE and clock.lead_us == 10 * MINUTE and clock.ahead
    wall.advance(SECOND)
    assert clock() == T0 + 5 * MINUTE + SECOND


def test_a_step_forward_is_followed_and_uses_up_the_lead_first() -> None:
    wall = ManualClock(T0)
    clock = WindowClock.of(wall)
    assert clock() == T0
    wall.step(-2 * HOUR)
    assert clock() == T0
    wall.advance(MINUTE)
    wall.step(2 * HOUR)  # put right: as if nothing happened
    assert clock() == T0 + MINUTE and clock.lead_us == 0 and not clock.ahead
    wall.step(2 * HOUR)  # a real step forward
    assert clock() == T0 + MINUTE + 2 * HOUR
    wall.step(-2 * HOUR)  # and back: the window stays where it went
    assert clock() == T0 + MINUTE + 2 * HOUR
    assert clock.steps == 4


def test_jitter_below_a_step_is_no_step_and_never_goes_back() -> None:
    wall = ManualClock(T0)
    clock = WindowClock.of(wall)
    assert clock() == T0
    wall.step(-(STEP_US - 1))
    assert clock() == T0 and clock.steps == 0 and clock.lead_us == 0
    wall.advance(STEP_US - 1)
    assert clock() == T0
    wall.advance(1)
    assert clock() == T0 + 1


def test_a_floor_is_gone_on_from_at_the_monotonic_pace() -> None:
    wall = ManualClock(T0)
    clock = WindowClock.of(wall)
    clock.raise_floor(T0 + HOUR)
    assert clock() == T0 + HOUR
    wall.advance(SECOND)
    assert clock() == T0 + HOUR + SECOND
    clock.raise_floor(T0)  # a floor below changes nothing
    assert clock() == T0 + HOUR + SECOND


def test_a_clock_without_a_monotonic_partner_is_read_as_it_is_above_its_floor() -> None:
    """A test's frozen clock (no monotonic partner to tell a step by) is taken as the
    test sets it: a reading made before the test froze time must not hold its window."""
    wall = ManualClock(T0)
    clock = WindowClock(wall, None)
    assert clock() == T0
    wall.now_us -= MINUTE
    assert clock() == T0 - MINUTE
    clock.raise_floor(T0)
    assert clock() == T0
    wall.now_us += 2 * MINUTE
    assert clock() == T0 + MINUTE


# -- every storage, through HTTP ---------------------------------------------------


@pytest.fixture
def stepped(backend: str, storage_uri: str) -> Iterator[Callable[[ManualClock], FlaskClient]]:
    """Build an app on the backend under test, driven by a ManualClock (on Redis it
    replaces TIME, as freezegun does elsewhere); closed afterwards."""
    apps: list[Flask] = []

    def build(clock: ManualClock) -> FlaskClient:
        settings = {"RINGSUM_STORAGE_URI": storage_uri, "RINGSUM_DATA_DIR": "", "RINGSUM_WINDOW": "1h"}
        app = create_app({**settings, **(REDIS_TEST_SETTINGS if backend != "memory" else {})}, clock=clock)
        apps.append(app)
        return app.test_client()

    yield build
    for app in apps:
        close_app(app)


def post(client: FlaskClient, key: str, value: int, idempotency_key: str | None = None) -> None:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    response = client.post(f"/metric/{key}", data=json.dumps({"value": value}), headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)


def test_two_keys_fed_the_same_values_after_a_step_back_agree(stepped) -> None:
    """The issue's case: a key fed 1000 then 7, and one fed the 7 only, after a
    10-minute step back. Each value counts for one hour of real time, in both keys."""
    clock = ManualClock(T0)
    client = stepped(clock)
    post(client, "old", 1000)
    clock.advance(5 * MINUTE)
    clock.step(-10 * MINUTE)
    post(client, "old", 7)
    post(client, "new", 7)
    clock.advance(57 * MINUTE)  # 62 min after the 1000: it aged out; the 7s have 3 min left
    assert (total(client, "old"), total(client, "new")) == (7, 7)
    clock.advance(3 * MINUTE + SECOND)
    assert (total(client, "old"), total(client, "new")) == (0, 0)


def test_a_step_forward_still_ages_values_out(stepped) -> None:
    clock = ManualClock(T0)
    client = stepped(clock)
    post(client, "k", 5)
    clock.step(HOUR + SECOND)
    assert total(client, "k") == 0


def test_a_retry_after_a_step_back_put_right_counts_once(stepped) -> None:
    """The issue's case: a write during a 2-hour step back, its retry after the clock
    was put right (sum 12, not 19)."""
    clock = ManualClock(T0)
    client = stepped(clock)
    post(client, "k", 7)
    clock.advance(SECOND)
    clock.step(-2 * HOUR)
    post(client, "k", 5, "retry-1")
    clock.advance(MINUTE)
    clock.step(2 * HOUR)
    clock.advance(MINUTE)
    post(client, "k", 5, "retry-1")
    assert total(client, "k") == 12


def test_a_retry_within_the_window_counts_once_whatever_the_steps(stepped) -> None:
    clock = ManualClock(T0)
    client = stepped(clock)
    post(client, "k", 5, "retry-1")
    for step in (-2 * HOUR, 3 * MINUTE, -20 * MINUTE, 2 * HOUR):
        clock.advance(5 * MINUTE)
        clock.step(step)
        post(client, "k", 5, "retry-1")
        assert total(client, "k") == 5
    clock.advance(HOUR - 17 * MINUTE)  # an hour past the write, by the window's clock
    assert total(client, "k") == 0


def test_a_step_forward_then_back_keeps_what_aged_out_out(stepped) -> None:
    """Aged out by the step forward, and stays out once the wall clock is put back:
    the window does not go back to count them again."""
    clock = ManualClock(T0)
    client = stepped(clock)
    post(client, "k", 1000)
    clock.step(2 * HOUR)
    assert total(client, "k") == 0
    clock.step(-2 * HOUR)
    clock.advance(SECOND)
    assert total(client, "k") == 0
    post(client, "k", 3)
    assert total(client, "k") == 3


# -- over a restart: memory storage with a data dir ---------------------------------


def reopen(storage: MemoryStorage, clock: ManualClock, data_dir: Path, *, killed: bool) -> MemoryStorage:
    """The storage again from its data dir, after a kill -9 or a clean stop, on a new
    window clock (as a new process: the wall clock's time and no lead)."""
    if killed:
        crash(storage)
    else:
        storage.close()
    return memory_storage(clock, RINGSUM_WINDOW="1h", RINGSUM_DATA_DIR=str(data_dir))


def marker(marker_id: str) -> Marker:
    return Marker(marker_id, b"f" * 32, 200, b"{}")


@pytest.mark.parametrize("killed", [True, False], ids=["kill-9", "stop"])
@pytest.mark.parametrize("checkpointed", [False, True], ids=["log", "snapshot"])
def test_a_step_forward_then_back_reads_alike_live_and_after_a_restart(
    tmp_path: Path, killed: bool, checkpointed: bool
) -> None:
    """The issue's case: a clock +2 h then back read 0 live but 1,000 after a restart.
    The step's reading is in the log (and the snapshot), so a restart starts from it."""
    clock = ManualClock(T0)
    storage = memory_storage(clock, RINGSUM_WINDOW="1h", RINGSUM_DATA_DIR=str(tmp_path))
    for number in range(1000):
        storage.record(f"k{number % 10}", 1)
    clock.step(2 * HOUR)
    assert storage.total("k0") == 0
    clock.step(-2 * HOUR)
    clock.advance(SECOND)
    assert storage.total("k1") == 0  # live: aged out, and stays out
    if checkpointed:
        storage.checkpoint()
    storage = reopen(storage, clock, tmp_path, killed=killed)
    try:
        assert [storage.total(f"k{number}") for number in range(10)] == [0] * 10
        assert storage.stats().keys == 0
    finally:
        storage.close()


@pytest.mark.parametrize("checkpointed", [False, True], ids=["log", "snapshot"])
def test_a_retry_after_a_step_back_put_right_counts_once_after_a_restart(tmp_path: Path, checkpointed: bool) -> None:
    clock = ManualClock(T0)
    storage = memory_storage(clock, RINGSUM_WINDOW="1h", RINGSUM_DATA_DIR=str(tmp_path))
    storage.record("k", 7)
    clock.advance(SECOND)
    clock.step(-2 * HOUR)
    assert storage.record("k", 5, marker("retry-1")) is None
    if checkpointed:
        storage.checkpoint()
    clock.advance(MINUTE)
    storage = reopen(storage, clock, tmp_path, killed=True)  # restarted while the clock is still back
    clock.advance(MINUTE)
    clock.step(2 * HOUR)  # put right
    try:
        assert storage.record("k", 5, marker("retry-1")) is not None
        assert storage.total("k") == 12
    finally:
        storage.close()


def test_a_restart_while_the_clock_is_back_goes_on_from_the_window_not_the_wall(tmp_path: Path) -> None:
    """A step back, values that age out by the window's clock meanwhile, a kill -9:
    the restart goes on from the window's time the log holds (clock marks once a second
    while it runs ahead), so they do not come back."""
    clock = ManualClock(T0)
    storage = memory_storage(clock, RINGSUM_WINDOW="1h", RINGSUM_DATA_DIR=str(tmp_path))
    storage.record("early", 1)
    clock.advance(10 * MINUTE)
    storage.record("late", 2)
    clock.step(-30 * MINUTE)
    clock.advance(50 * MINUTE + SECOND)  # an hour and a second after "early", by the window
    storage._persistence._next_mark = 0  # the watch thread's once a second, now
    assert (storage.total("early"), storage.total("late")) == (0, 2)
    storage = reopen(storage, clock, tmp_path, killed=True)
    try:
        assert (storage.total("early"), storage.total("late")) == (0, 2)
        clock.advance(10 * MINUTE)
        assert storage.total("late") == 0
    finally:
        storage.close()


# -- Redis in production: TIME, under the window's clock as a floor ------------------


@pytest.mark.parametrize("backend", ["redis", "cluster"], indirect=True)
def test_on_redis_a_stepped_back_time_is_gone_on_from_by_every_process(
    storage_uri: str, redis_primaries: list[redis.Redis]
) -> None:
    """No test clock: the scripts read TIME. A process that read TIME 10 minutes later
    than TIME says now (Redis's clock stepped back) keeps the window there: the value
    is booked there, its key and marker live 10 minutes longer by Redis's clock, and a
    process started afterwards goes on from ringsum:clock, so a retry counts once."""
    settings = {"RINGSUM_STORAGE_URI": storage_uri, "RINGSUM_WINDOW": "1h", **REDIS_TEST_SETTINGS}
    options = read_settings(settings, environ={}).storage_options()
    first = open_storage(storage_uri, options)
    second = None
    try:
        assert first.total("k") == 0  # connected: TIME read (and tried again once a second)
        deadline = time.monotonic() + 10
        while first._window is None and time.monotonic() < deadline:
            time.sleep(0.1)
        ahead = now_us() + 10 * MINUTE
        first._window.raise_floor(ahead)  # as if TIME had stepped back 10 minutes since
        assert first.record("k", 5, marker("retry-1")) is None
        (ttl_ms,) = [node.pttl(name) for node in redis_primaries for name in node.keys("ringsum:{k}:w")]
        assert HOUR // 1000 + 10 * MINUTE // 1000 - 30_000 < ttl_ms <= HOUR // 1000 + 10 * MINUTE // 1000 + 2000
        held = [node.hget(name, "expires") for node in redis_primaries for name in node.keys("ringsum:*i:*")]
        assert held and all(int(expires) >= ahead + HOUR for expires in held if expires)
        first._sync_clock()
        second = open_storage(storage_uri, options)  # a process started after the step
        assert second.total("k") == 5
        assert int(second._now_argument()[1:]) >= ahead
        assert second.record("k", 5, marker("retry-1")) is not None
        assert second.total("k") == 5
    finally:
        first.close()
        if second is not None:
            second.close()


def test_a_real_server_goes_on_from_the_clock_its_data_dir_holds(tmp_path: Path) -> None:
    """A data dir whose last run read a time 2 h ahead of this machine's clock (a step
    forward, then put back while it was down): `python app.py` starts from that time,
    so what had aged out stays out, and a new value counts."""
    clock = ManualClock(now_us() - 30 * MINUTE)
    storage = memory_storage(clock, RINGSUM_WINDOW="1h", RINGSUM_DATA_DIR=str(tmp_path))
    storage.record("visits", 5)
    clock.step(2 * HOUR + 30 * MINUTE)
    assert storage.total("visits") == 0  # read 2 h ahead: logged as a clock mark
    crash(storage)
    with serving({"RINGSUM_DATA_DIR": str(tmp_path), "RINGSUM_WINDOW": "1h"}) as server:
        assert server.total("visits") == 0
        response = requests.post(f"{server.url}/metric/visits", json={"value": 2}, timeout=10)
        assert response.status_code == 200
        assert server.total("visits") == 2
