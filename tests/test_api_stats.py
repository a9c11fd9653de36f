"""GET /metric/<key>/stats: the sum, the count of values and their mean, on every
backend; the batch rule (each event counts); counts in series with ?with=count."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from ringsum.web.state import close_app, storage

NOW = datetime(2026, 1, 1, 12, 0, 0, 400_000, tzinfo=UTC)


def stats(client, key: str = "visits", query: str = "") -> dict:
    response = client.get(f"/metric/{key}/stats{query}")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def test_a_key_answers_its_sum_count_and_mean_and_sum_is_unchanged(client) -> None:
    with freeze_time(NOW) as clock:
        for value in (1, 2, 4):
            assert client.post("/metric/visits", json={"value": value}).status_code == 200
            clock.tick(timedelta(milliseconds=300))  # two of them share a tick: still three values
        assert client.get("/metric/visits/sum").data == b'{"value": 7}'  # byte for byte as before
        answer = client.get("/metric/visits/stats")
        assert answer.data == b'{"sum": 7, "count": 3, "mean": 2.3333333333333335}'
        assert stats(client, "never-seen") == {"sum": 0, "count": 0, "mean": None}


def test_a_batch_counts_each_event_even_when_a_key_is_named_twice(client) -> None:
    with freeze_time(NOW):
        events = [
            {"key": "a", "value": 1},
            {"key": "b", "value": 10},
            {"key": "a", "value": 2},
            {"key": "a", "value": 3},
        ]
        assert client.post("/metric", json=events).get_json() == {"recorded": 4}
        assert client.post("/metric/a", json={"value": 0}).status_code == 200  # a zero is a value too
        assert stats(client, "a") == {"sum": 6, "count": 4, "mean": 1.5}
        assert stats(client, "b") == {"sum": 10, "count": 1, "mean": 10.0}


def test_an_idempotent_retry_counts_once(client) -> None:
    with freeze_time(NOW):
        for _ in range(3):
            response = client.post("/metric", json=[{"key": "a", "value": 5}] * 2, headers={"Idempotency-Key": "k1"})
            assert response.status_code == 200
        assert stats(client, "a") == {"sum": 10, "count": 2, "mean": 5.0}


def test_a_shorter_window_counts_only_its_values_and_values_age_out(client) -> None:
    with freeze_time(NOW) as clock:
        for age, value in ((3700, 32), (3599, 16), (1799, 8), (900.5, 4), (899, 2), (0, 1)):
            clock.move_to(NOW - timedelta(seconds=age))
            assert client.post("/metric/visits", json={"value": value}).status_code == 200
        clock.move_to(NOW)
        assert stats(client) == {"sum": 31, "count": 5, "mean": 6.2}
        assert stats(client, query="?window=15m") == {"sum": 3, "count": 2, "mean": 1.5}
        assert stats(client, query="?window=901s") == {"sum": 7, "count": 3, "mean": 7 / 3}
        clock.move_to(NOW + timedelta(hours=1, seconds=1))
        assert stats(client) == {"sum": 0, "count": 0, "mean": None}


def test_the_mean_is_the_exact_quotient_rounded_once(client) -> None:
    """Sums past 2**53 still give the correctly rounded mean, not one rounded twice."""
    big = 2**53 - 1
    with freeze_time(NOW):
        client.post("/metric", json=[{"key": "big", "value": big}, {"key": "big", "value": big}])
        client.post("/metric/big", json={"value": 1})
        found = json.loads(client.get("/metric/big/stats").data)
        assert found["sum"] == 2 * big + 1 and found["count"] == 3
        assert found["mean"] == (2 * big + 1) / 3
        client.post("/metric/neg", json={"value": -3})
        client.post("/metric/neg", json={"value": 0})
        assert stats(client, "neg") == {"sum": -3, "count": 2, "mean": -1.5}


def test_a_busy_key_counts_every_tick(make_app) -> None:
    """Past a sixth of the window's ticks a memory key is packed into a ring (its counts
    a byte each, widened once a tick counts 300), past an eighth a Redis key too (a
    2-minute window: 121 ticks): counts are kept there as well."""
    client = make_app(RINGSUM_WINDOW="2m").test_client()
    with freeze_time(NOW) as clock:
        for tick in range(60):
            client.post("/metric", json=[{"key": "busy", "value": 2}] * (300 if tick == 59 else 3))
            clock.tick(timedelta(seconds=1))
        assert stats(client, "busy") == {"sum": 2 * (59 * 3 + 300), "count": 59 * 3 + 300, "mean": 2.0}
        assert stats(client, "busy", "?window=10s") == {"sum": 2 * (9 * 3 + 300), "count": 9 * 3 + 300, "mean": 2.0}
        series = client.get("/metric/busy/series?step=10s&with=count").get_json()
        assert sum(point[2] for point in series["points"]) == 59 * 3 + 300


@pytest.mark.parametrize(
    "query, hint",
    [
        ("?window=0", "window must be a duration above 0"),
        ("?window=2h", "at most RINGSUM_WINDOW"),
        ("?window=soon", "window must be a duration"),
    ],
)
def test_bad_input_is_a_400_problem_that_says_what_to_fix(client, query: str, hint: str) -> None:
    response = client.get(f"/metric/visits/stats{query}")
    assert response.status_code == 400 and response.mimetype == "application/problem+json"
    assert hint in response.get_json()["detail"]


def test_a_bad_key_is_refused_as_on_sum(client) -> None:
    response = client.get("/metric/no%20spaces/stats")
    assert response.status_code == client.get("/metric/no%20spaces/sum").status_code
    assert response.mimetype == "application/problem+json"


def test_a_series_carries_counts_when_asked_with_count(client) -> None:
    with freeze_time(NOW) as clock:
        client.post("/metric", json=[{"key": "visits", "value": 5}, {"key": "visits", "value": 7}])
        clock.tick(timedelta(minutes=2))
        client.post("/metric/visits", json={"value": 1})
        plain = client.get("/metric/visits/series?step=1m").get_json()
        counted = client.get("/metric/visits/series?step=1m&with=count").get_json()
    assert [point[:2] for point in counted["points"]] == plain["points"]  # the same sums
    assert all(len(point) == 2 for point in plain["points"])  # unchanged without with=count
    assert [point[2] for point in counted["points"] if point[2]] == [2, 1]
    assert sum(point[2] for point in counted["points"]) == 3


def test_a_series_refuses_an_unknown_with(client) -> None:
    response = client.get("/metric/visits/series?with=mean")
    assert response.status_code == 400 and response.mimetype == "application/problem+json"
    assert "with must be count" in response.get_json()["detail"]


@pytest.mark.parametrize("checkpointed", [False, True], ids=["log-replayed", "from-a-snapshot"])
def test_counts_survive_a_restart(make_app, backend: str, tmp_path, checkpointed: bool) -> None:
    """Memory storage replays its log (each event of a batch counted again), or reads a
    snapshot that holds each tick's count, packed keys included; Redis keeps them."""
    if checkpointed and backend != "memory":
        pytest.skip("only memory storage has snapshots")
    settings = {"RINGSUM_WINDOW": "2m"}
    if backend == "memory":
        settings |= {"RINGSUM_DATA_DIR": str(tmp_path), "RINGSUM_FSYNC": "no"}
    with freeze_time(NOW) as clock:
        app = make_app(**settings)
        client = app.test_client()
        for tick in range(60):  # a ring in memory past 24 ticks, on Redis past 15
            events = [{"key": "busy", "value": tick}] * (1 + tick % 3) + [{"key": "few", "value": 5}] * (tick < 2)
            assert client.post("/metric", json=events).status_code == 200
            clock.tick(timedelta(seconds=1))
        queries = [(key, query) for key in ("busy", "few") for query in ("", "?window=20s")]
        before = {key + query: stats(client, key, query) for key, query in queries}
        series_before = client.get("/metric/busy/series?step=10s&with=count").get_json()
        if checkpointed:
            storage(app).checkpoint()
        close_app(app)
        again = make_app(**settings).test_client()
        assert {key + query: stats(again, key, query) for key, query in queries} == before
        assert before["few"] == {"sum": 10, "count": 2, "mean": 5.0}
        assert before["busy"]["count"] == sum(1 + tick % 3 for tick in range(60))
        assert again.get("/metric/busy/series?step=10s&with=count").get_json() == series_before
