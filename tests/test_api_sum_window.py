"""GET /metric/<key>/sum?window=: a sum over the most recent part of the window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

NOW = datetime(2026, 1, 1, 12, 0, 0, 400_000, tzinfo=UTC)


def record_at_ages(client, clock, ages_and_values: list[tuple[float, int]]) -> None:
    for age, value in sorted(ages_and_values, reverse=True):  # oldest first
        clock.move_to(NOW - timedelta(seconds=age))
        assert client.post("/metric/visits", json={"value": value}).status_code == 200
    clock.move_to(NOW)


@pytest.mark.parametrize(
    "window, expected",
    [
        ("15m", 1 + 2),  # ages 0 and 899
        ("900", 1 + 2),  # a bare number is seconds
        ("901s", 1 + 2 + 4),  # age 900.5: its tick is 901 ticks back
        ("30m", 1 + 2 + 4 + 8),
        ("1h", 1 + 2 + 4 + 8 + 16),
        ("1", 1),
        ("500ms", 1),  # rounded up to one whole tick
    ],
)
def test_a_shorter_window_sums_only_its_values(client, window: str, expected: int) -> None:
    with freeze_time(NOW) as clock:
        record_at_ages(client, clock, [(0, 1), (899, 2), (900.5, 4), (1799, 8), (3599, 16), (3700, 32)])
        response = client.get(f"/metric/visits/sum?window={window}")
        whole = client.get("/metric/visits/sum").get_json()
    assert response.status_code == 200
    assert response.get_json() == {"value": expected}
    assert whole == {"value": 31}


def test_window_is_rounded_up_to_whole_ticks(make_app) -> None:
    """With 10 s ticks, 11 s and 15 s both mean two ticks; 10 s means one."""
    client = make_app(RINGSUM_RESOLUTION="10s").test_client()
    with freeze_time(datetime(2026, 1, 1, 11, 59, 45, tzinfo=UTC)) as clock:
        client.post("/metric/visits", json={"value": 7})  # two ticks before the reads
        clock.move_to(datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC))
        assert client.get("/metric/visits/sum?window=15s").get_json() == {"value": 7}
        assert client.get("/metric/visits/sum?window=10s").get_json() == {"value": 0}
        assert client.get("/metric/visits/sum?window=11s").get_json() == {"value": 7}


def test_exact_mode_takes_any_window(make_app) -> None:
    client = make_app(RINGSUM_RESOLUTION="0").test_client()
    with freeze_time(NOW) as clock:
        record_at_ages(client, clock, [(0.25, 1), (0.5, 2)])
        assert client.get("/metric/visits/sum?window=250ms").get_json() == {"value": 1}
        assert client.get("/metric/visits/sum?window=499999us").get_json() == {"value": 1}
        assert client.get("/metric/visits/sum?window=500ms").get_json() == {"value": 3}


@pytest.mark.parametrize(
    "query",
    [
        "window=0",
        "window=0s",
        "window=-5m",
        "window=15x",
        "window=fifteen",
        "window=2h",
        "window=3601s",
        "window=",
        "window=%2015m",
        "window=1e3",
        "window=15%C2%A0m",
        "window=%D9%A3m",  # an Arabic-Indic digit three
    ],
)
def test_bad_windows_are_400_problems_naming_the_parameter(client, query: str) -> None:
    client.post("/metric/visits", json={"value": 3})
    response = client.get(f"/metric/visits/sum?{query}")
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == 400
    assert body["detail"].startswith("window must be a duration above 0 and at most RINGSUM_WINDOW (1h)")
    assert client.get("/metric/visits/sum").get_json() == {"value": 3}


def test_the_key_is_checked_before_the_window(client) -> None:
    response = client.get("/metric/no%20spaces/sum?window=15m")
    assert response.status_code == 400
    assert "key must be" in response.get_json()["detail"]


def test_other_query_parameters_are_ignored(client) -> None:
    client.post("/metric/visits", json={"value": 3})
    assert client.get("/metric/visits/sum?unknown=1").get_json() == {"value": 3}
