"""The Idempotency-Key header on POST /metric/<key> and POST /metric: a retry with the
same key counts nothing twice and gets the first answer again, on every storage."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from freezegun import freeze_time
from helpers import ManualClock, assert_problem, crash, memory_storage, total
from serving import serving

from ringsum.inputs.idempotency import fingerprint
from ringsum.storage import IdempotencyKeyReused, Marker, StorageUnavailable
from ringsum.storage.memory import MemoryStorage
from ringsum.web import state

START = "2026-01-01 00:00:00"
SINGLE = ("/metric/visits", {"value": 3})
BATCH = ("/metric", [{"key": "visits", "value": 3}, {"key": "signups", "value": 1}])


def post(client: FlaskClient, path: str, document: object, key: str | None = "retry-1"):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(path, data=json.dumps(document), headers=headers)


def metric(client: FlaskClient, name: str) -> float:
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


@pytest.mark.parametrize("path, document", [SINGLE, BATCH], ids=["single", "batch"])
def test_a_retry_counts_once_and_gets_the_first_answer_again(client: FlaskClient, path: str, document) -> None:
    first = post(client, path, document)
    again = post(client, path, document)
    assert first.status_code == again.status_code == 200
    assert again.get_data() == first.get_data()
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert {**first.headers, "Idempotent-Replayed": "true"} == dict(again.headers)
    assert total(client, "visits") == 3


def test_requests_without_the_header_are_each_counted(client: FlaskClient) -> None:
    for _ in range(2):
        response = post(client, *SINGLE, key=None)
        assert response.get_data() == b"{}" and "Idempotent-Replayed" not in response.headers
    assert total(client, "visits") == 6


def test_different_keys_are_different_writes(client: FlaskClient) -> None:
    post(client, *SINGLE, key="one")
    post(client, *SINGLE, key="two")
    assert total(client, "visits") == 6


@pytest.mark.parametrize(
    "path, document",
    [
        ("/metric/visits", {"value": 4}),  # another body
        ("/metric/signups", {"value": 3}),  # another path
        ("/metric/visits/", {"value": 3}),  # another path, even if it records the same
        ("/metric", [{"key": "signups", "value": 3}]),  # another endpoint
    ],
)
def test_a_key_reused_for_another_request_is_a_422_that_records_nothing(
    client: FlaskClient, path: str, document
) -> None:
    post(client, *SINGLE)
    assert_problem(post(client, path, document), 422, "Idempotency-Key was first used for another request")
    assert total(client, "visits") == 3 and total(client, "signups") == 0
    assert post(client, *SINGLE).headers["Idempotent-Replayed"] == "true"  # the first still stands


@pytest.mark.parametrize("value", ["", "a b", "x" * 256, "tab\there", "\x7f", "é", "a,b", "a, b"])
def test_a_key_that_is_not_1_to_255_visible_ascii_characters_but_a_comma_is_a_400(
    client: FlaskClient, value: str
) -> None:
    """A comma is refused because a header sent twice reaches the app joined by one."""
    environ = {"HTTP_IDEMPOTENCY_KEY": value}  # as the server hands it over, latin-1
    for path, document in (SINGLE, BATCH):
        response = client.post(path, data=json.dumps(document), environ_base=environ)
        assert_problem(response, 400, "Idempotency-Key header must be 1-255 visible ASCII characters, no spaces")
    assert total(client, "visits") == 0


@pytest.mark.parametrize("value", ["x", "~" * 255, '"8e03978e-40d5-43e8-bc93-6894a57f9324"', "{tag}:a;b=c!"])
def test_any_1_to_255_visible_ascii_characters_make_a_key(client: FlaskClient, value: str) -> None:
    assert post(client, *SINGLE, key=value).status_code == 200
    assert post(client, *SINGLE, key=value).headers["Idempotent-Replayed"] == "true"
    assert total(client, "visits") == 3


def test_a_bad_body_with_a_key_records_nothing_and_leaves_the_key_free(client: FlaskClient) -> None:
    assert post(client, "/metric/visits", {"value": "three"}).status_code == 422
    assert post(client, *SINGLE).status_code == 200
    assert total(client, "visits") == 3


def eight_at_once(send: Callable[[], tuple[int, bytes, str | None]]) -> Counter:
    """Run ``send`` in 8 threads released together; count the (status, body,
    Idempotent-Replayed) answers they got."""
    start = threading.Barrier(8)
    answers = []

    def run() -> None:
        start.wait()
        answers.append(send())

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Counter(answers)


def test_eight_threads_sending_one_key_at_once_count_once(app: Flask) -> None:
    def send() -> tuple[int, bytes, str | None]:
        response = post(app.test_client(), *BATCH)
        return response.status_code, response.get_data(), response.headers.get("Idempotent-Replayed")

    # A repeat in flight waits for the first (its write and marker are one atomic
    # step), so every answer is the first one: never a 409.
    answers = eight_at_once(send)
    assert answers == {(200, b'{"recorded": 2}', None): 1, (200, b'{"recorded": 2}', "true"): 7}
    assert total(app.test_client(), "visits") == 3 and total(app.test_client(), "signups") == 1


def test_markers_expire_with_the_window(make_app: Callable[..., Flask]) -> None:
    """Kept the window and one tick (as long as the value may count), then forgotten:
    the same key is a new write."""
    with freeze_time(START) as clock:
        client = make_app(RINGSUM_WINDOW="1m", RINGSUM_RESOLUTION="1s").test_client()
        post(client, *SINGLE)
        clock.tick(timedelta(seconds=60))
        assert post(client, *SINGLE).headers.get("Idempotent-Replayed") == "true"
        assert total(client, "visits") == 3
        clock.tick(timedelta(seconds=1))
        again = post(client, *SINGLE)
        assert again.status_code == 200 and "Idempotent-Replayed" not in again.headers
        assert total(client, "visits") == 3  # the first value aged out, this one counts
        assert post(client, *SINGLE).headers.get("Idempotent-Replayed") == "true"


def test_metrics_count_replays_and_conflicts(client: FlaskClient) -> None:
    post(client, *SINGLE)
    post(client, *SINGLE)
    post(client, *SINGLE)
    post(client, "/metric/visits", {"value": 5})
    assert metric(client, "ringsum_idempotent_replays_total") == 2
    assert metric(client, "ringsum_idempotency_conflicts_total") == 1
    assert metric(client, "ringsum_values_recorded_total") == 1


# -- memory storage: the cap -------------------------------------------------------


def test_over_the_cap_is_a_507_that_records_nothing_and_forgets_no_marker(
    make_memory_app: Callable[..., Flask],
) -> None:
    with freeze_time(START) as clock:
        client = make_memory_app(RINGSUM_MAX_IDEMPOTENCY_KEYS="2", RINGSUM_WINDOW="1m").test_client()
        post(client, *SINGLE, key="one")
        post(client, *SINGLE, key="two")
        assert_problem(post(client, *SINGLE, key="three"), 507, "RINGSUM_MAX_IDEMPOTENCY_KEYS")
        assert total(client, "visits") == 6
        # Held markers still answer their retries; writes without a key still go in.
        assert post(client, *SINGLE, key="one").headers["Idempotent-Replayed"] == "true"
        assert post(client, *SINGLE, key=None).status_code == 200
        assert metric(client, "ringsum_idempotency_keys") == 2
        clock.tick(timedelta(seconds=61))  # both markers expired: room again
        assert post(client, *SINGLE, key="three").status_code == 200
        assert metric(client, "ringsum_idempotency_keys") == 1


def test_a_refused_write_leaves_no_marker(make_memory_app: Callable[..., Flask]) -> None:
    """Only successes are remembered: a retry of a refused write is processed again."""
    client = make_memory_app(RINGSUM_MAX_KEYS="1").test_client()
    post(client, "/metric/other", {"value": 1}, key=None)
    assert post(client, *SINGLE).status_code == 507
    client.delete("/metric/other")
    retried = post(client, *SINGLE)
    assert retried.status_code == 200 and "Idempotent-Replayed" not in retried.headers
    assert total(client, "visits") == 3


def test_the_sweep_drops_expired_markers(make_memory_app: Callable[..., Flask]) -> None:
    with freeze_time(START) as clock:
        app = make_memory_app(RINGSUM_WINDOW="1m")
        for index in range(3):
            post(app.test_client(), *SINGLE, key=f"k{index}")
        clock.tick(timedelta(seconds=61))
        state.storage(app).sweep()
        assert state.storage(app).stats().idempotency_keys == 0


# -- Redis and Cluster --------------------------------------------------------------


REDIS_ONLY = pytest.mark.parametrize("backend", ["redis", "cluster"], indirect=True)


@REDIS_ONLY
def test_a_retry_after_the_answer_was_lost_counts_once(app: Flask, monkeypatch) -> None:
    """Redis ran the script, then the connection dropped before its reply: a 503, and
    the value is in. The client's retry finds the marker."""
    storage = state.storage(app)
    run = storage._run_prepared

    def applied_then_lost(name: str, calls: list) -> list:
        results = run(name, calls)
        if name == "record":
            monkeypatch.setattr(storage, "_run_prepared", run)
            raise StorageUnavailable("Redis is unreachable")
        return results

    monkeypatch.setattr(storage, "_run_prepared", applied_then_lost)
    client = app.test_client()
    lost = post(client, *BATCH)
    assert lost.status_code == 503
    retried = post(client, *BATCH)
    assert retried.status_code == 200 and retried.headers["Idempotent-Replayed"] == "true"
    assert retried.get_data() == b'{"recorded": 2}'
    assert total(client, "visits") == 3 and total(client, "signups") == 1


@REDIS_ONLY
def test_the_storage_returns_the_marker_held_and_records_nothing(app: Flask) -> None:
    storage = state.storage(app)
    marker = Marker("direct", fingerprint("POST", "/metric/visits", b"3"), 200, b"{}")
    assert storage.record("visits", 3, marker) is None
    assert storage.record("visits", 3, marker) == marker
    assert storage.total("visits") == 3


@REDIS_ONLY
def test_a_refused_write_frees_the_key_on_redis_too(client: FlaskClient) -> None:
    """A sum past int64 is refused on Redis; the key is then free for another request."""
    too_much = [{"key": "visits", "value": 2**53 - 1}] * 1100
    assert post(client, "/metric", too_much).status_code == 422
    assert post(client, *SINGLE).status_code == 200
    assert total(client, "visits") == 3


@pytest.mark.parametrize("backend", ["cluster"], indirect=True)
def test_a_partial_cluster_batch_retried_completes_it_once(app: Flask, backend: str) -> None:
    """On Cluster a batch is one script per hash slot. If only some ran (a 503 in
    between), the retry with the same key records exactly the slots that had not."""
    from redis.crc import key_slot

    events = [{"key": f"k{index}", "value": index + 1} for index in range(20)]
    body = json.dumps(events)
    storage = state.storage(app)
    first_slot = key_slot(b"k0")
    applied = [(event["key"], event["value"]) for event in events if key_slot(event["key"].encode()) == first_slot]
    assert len(applied) < len(events)
    marker = Marker("partial", fingerprint("POST", "/metric", body.encode()), 200, b'{"recorded": 20}')
    assert storage.record_many(applied, marker) is None  # the slot that ran before the 503
    client = app.test_client()
    retried = client.post("/metric", data=body, headers={"Idempotency-Key": "partial"})
    assert retried.status_code == 200 and retried.get_data() == b'{"recorded": 20}'
    assert "Idempotent-Replayed" not in retried.headers  # part of it was recorded now
    assert [total(client, f"k{index}") for index in range(20)] == [index + 1 for index in range(20)]
    again = client.post("/metric", data=body, headers={"Idempotency-Key": "partial"})
    assert again.headers["Idempotent-Replayed"] == "true"
    assert sum(total(client, f"k{index}") for index in range(20)) == sum(range(1, 21))


def test_eight_clients_sending_one_key_to_a_real_server_count_once(redis_server) -> None:
    """Through ``python app.py --threads 4`` on Redis: real sockets, real request threads."""
    redis_server.flushall()
    with serving({"RINGSUM_STORAGE_URI": redis_server.url}, threads=4) as server:

        def send() -> tuple[int, bytes, str | None]:
            headers = {"Idempotency-Key": "real"}
            response = requests.post(f"{server.url}/metric/visits", data='{"value": 3}', headers=headers, timeout=10)
            return response.status_code, response.content, response.headers.get("Idempotent-Replayed")

        assert eight_at_once(send) == {(200, b"{}", None): 1, (200, b"{}", "true"): 7}
        assert server.total("visits") == 3


@pytest.mark.parametrize("marker_id", ["x}:z", "{other}", "*"])
def test_a_key_shaped_like_ringsums_own_redis_names_stays_a_marker(client: FlaskClient, marker_id: str) -> None:
    """Ids are written in hex in Redis names: none is ever read as a metric key."""
    assert post(client, *SINGLE, key=marker_id).status_code == 200
    assert client.get("/metric").get_json()["metrics"] == [{"key": "visits", "value": 3}]
    assert metric(client, "ringsum_keys") == 1


# -- memory storage: markers live in the write-ahead log, with their writes ---------


T0 = 1_780_000_000_000_000


def storage_in(data_dir: Path, clock: ManualClock) -> MemoryStorage:
    return memory_storage(clock, RINGSUM_WINDOW="1m", RINGSUM_DATA_DIR=str(data_dir), RINGSUM_FSYNC="no")


SINGLE_MARKER = Marker("single", fingerprint("POST", "/metric/visits", b'{"value": 3}'), 200, b"{}")
BATCH_MARKER = Marker("batch", fingerprint("POST", "/metric", b"[...]"), 200, b'{"recorded": 2}')


@pytest.mark.parametrize("checkpointed", [False, True], ids=["in the log", "folded into the snapshot"])
def test_markers_come_back_after_a_crash_with_the_writes_they_guard(tmp_path: Path, checkpointed: bool) -> None:
    clock = ManualClock(T0)
    storage = storage_in(tmp_path, clock)
    storage.record("visits", 3, SINGLE_MARKER)
    storage.record_many([("a", 1), ("b", 2)], BATCH_MARKER)
    if checkpointed:
        storage.checkpoint()
    crash(storage)
    clock.advance(5_000_000)
    again = storage_in(tmp_path, clock)
    try:
        assert again.record("visits", 3, SINGLE_MARKER) == SINGLE_MARKER
        assert again.record_many([("a", 1), ("b", 2)], BATCH_MARKER) == BATCH_MARKER
        with pytest.raises(IdempotencyKeyReused):
            again.record("visits", 4, Marker("single", fingerprint("POST", "/metric/visits", b"4"), 200, b"{}"))
        assert (again.total("visits"), again.total("a"), again.total("b")) == (3, 1, 2)
        assert again.stats().idempotency_keys == 2
    finally:
        again.close()


def test_markers_that_expired_while_down_are_not_restored(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    storage = storage_in(tmp_path, clock)
    storage.record("visits", 3, SINGLE_MARKER)
    storage.checkpoint()
    storage.record("later", 1, BATCH_MARKER)
    crash(storage)
    clock.advance(61_000_000)  # the window and its tick: both writes and the first marker aged out
    again = storage_in(tmp_path, clock)
    try:
        assert again.stats().idempotency_keys == 0
        assert again.record("visits", 3, SINGLE_MARKER) is None  # a new write
        assert again.total("visits") == 3
    finally:
        again.close()


def test_kill_9_after_a_write_then_its_retry_counts_once(tmp_path: Path) -> None:
    """A real ``python app.py`` killed with SIGKILL once the write was logged: the client
    that lost the answer retries against the restarted server, on the same data dir."""
    env = {"RINGSUM_DATA_DIR": str(tmp_path / "data")}
    headers = {"Idempotency-Key": "before-the-crash"}
    with serving(env) as server:
        first = requests.post(f"{server.url}/metric/visits", data='{"value": 3}', headers=headers, timeout=10)
        assert first.status_code == 200
        server.kill()  # kill -9 of the whole process group
    with serving(env) as server:
        retried = requests.post(f"{server.url}/metric/visits", data='{"value": 3}', headers=headers, timeout=10)
        assert retried.status_code == 200 and retried.content == first.content
        assert retried.headers["Idempotent-Replayed"] == "true"
        assert server.total("visits") == 3


def test_a_key_sent_twice_through_the_real_server_is_a_400() -> None:
    """Which key was meant cannot be told: the edge refuses a repeated Idempotency-Key."""
    body = b'{"value": 3}'
    with serving({"RINGSUM_DATA_DIR": ""}) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
            connection.sendall(
                b"POST /metric/visits HTTP/1.1\r\nHost: x\r\nIdempotency-Key: a\r\nIdempotency-Key: b\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            answer = b""
            while chunk := connection.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert b"idempotency-key header is sent twice" in answer
        assert server.total("visits") == 0
