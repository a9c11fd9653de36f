"""GET /metric/<key>/series?step=: the window cut into aligned steps, on every backend."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from freezegun import freeze_time

NOW = datetime(2026, 1, 1, 12, 0, 30, 250_000, tzinfo=UTC)  # deliberately not on a step boundary
WINDOW_S = 3600


def record_spread_over_the_window(client, clock) -> list[tuple[float, int]]:
    """Values from just outside the window to now, oldest first; returns (unix time, value)."""
    ages = [3605, 3601, 3600.5, 3599, 3000, 2222.2, 1800, 977, 600, 61, 60, 59.9, 1, 0]
    recorded = []
    for index, age in enumerate(ages):
        clock.move_to(NOW - timedelta(seconds=age))
        value = (index + 1) * 10
        assert client.post("/metric/visits", json={"value": value}).status_code == 200
        recorded.append(((NOW - timedelta(seconds=age)).timestamp(), value))
    clock.move_to(NOW)
    return recorded


def expected_points(recorded: list[tuple[float, int]], step: int) -> dict[int, int]:
    """The naive model: each value in the window, summed into the step it was recorded in."""
    now_tick = int(NOW.timestamp())
    points: dict[int, int] = {}
    for time, value in recorded:
        if now_tick - int(time) <= WINDOW_S:  # tick mode, 1 s ticks
            start = int(time) // step * step
            points[start] = points.get(start, 0) + value
    return points


@pytest.mark.parametrize("step, seconds", [("1m", 60), ("7m", 420), ("90s", 90), ("1h", 3600), ("2s", 2)])
def test_steps_add_up_to_the_window_sum(client, step: str, seconds: int) -> None:
    with freeze_time(NOW) as clock:
        recorded = record_spread_over_the_window(client, clock)
        total = client.get("/metric/visits/sum").get_json()["value"]
        response = client.get(f"/metric/visits/series?step={step}")
    assert response.status_code == 200
    body = response.get_json()
    assert body["step"] == seconds
    points = body["points"]
    starts = [start for start, _ in points]
    assert len(points) == -(-WINDOW_S // seconds) + 1
    assert starts == sorted(starts) and all(b - a == seconds for a, b in pairwise(starts))
    assert all(isinstance(start, int) and start % seconds == 0 for start in starts)
    assert starts[-1] <= NOW.timestamp() < starts[-1] + seconds
    assert sum(value for _, value in points) == total
    expected = expected_points(recorded, seconds)
    assert points == [[start, expected.get(start, 0)] for start in starts]
    assert set(expected) <= set(starts)


def test_default_step_is_one_minute(client) -> None:
    with freeze_time(NOW):
        client.post("/metric/visits", json={"value": 5})
        body = client.get("/metric/visits/series").get_json()
    assert body["step"] == 60
    assert len(body["points"]) == 61
    assert body["points"][-1] == [int(NOW.timestamp()) // 60 * 60, 5]


def test_a_key_never_seen_has_every_step_zero(client) -> None:
    with freeze_time(NOW):
        body = client.get("/metric/nobody/series?step=10m").get_json()
    assert [value for _, value in body["points"]] == [0] * 7


def test_at_most_3600_points(make_app) -> None:
    """A 3599 s window in 1 s steps is 3600 points, the most a series has."""
    client = make_app(RINGSUM_WINDOW="3599s").test_client()
    with freeze_time(NOW):
        client.post("/metric/visits", json={"value": 1})
        body = client.get("/metric/visits/series?step=1s").get_json()
    assert len(body["points"]) == 3600
    assert sum(value for _, value in body["points"]) == 1


def test_fractional_steps_and_starts_are_exact_decimals(make_app) -> None:
    client = make_app(RINGSUM_WINDOW="1m", RINGSUM_RESOLUTION="500ms").test_client()
    with freeze_time(NOW):
        client.post("/metric/visits", json={"value": 3})
        response = client.get("/metric/visits/series?step=1500ms")
    body = response.get_json()
    assert body["step"] == 1.5
    starts = [start for start, _ in body["points"]]
    # now is 1767268830.25; 1767268830 is a multiple of 1.5, so steps alternate x.0 and x.5
    assert starts == [1767268830 - 1.5 * back for back in range(40, -1, -1)]
    assert b"[1767268828.5, 0], [1767268830, 3]]" in response.data  # whole seconds as integers
    assert body["points"][-1] == [1767268830, 3]


@pytest.mark.parametrize(
    "query, detail",
    [
        ("step=1s", "step must be at least 2s"),  # 3601 points
        ("step=0", "step must be at least 2s"),
        ("step=1500ms", "whole number of ticks"),
        ("step=2h", "step must be at most the window"),
        ("step=", "step must be a duration"),
        ("step=-1m", "step must be a duration"),
        ("step=1x", "step must be a duration"),
        ("step=%201m", "step must be a duration"),
        ("step=1e2", "step must be a duration"),
        ("step=99999999999999999999d", "step must be a duration"),
    ],
)
def test_bad_steps_are_400_problems(client, query: str, detail: str) -> None:
    client.post("/metric/visits", json={"value": 1})
    response = client.get(f"/metric/visits/series?{query}")
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert detail in response.get_json()["detail"]
    assert client.get("/metric/visits/sum").get_json() == {"value": 1}


def test_exact_mode_names_its_minimum_step(make_app) -> None:
    client = make_app(RINGSUM_RESOLUTION="0").test_client()
    too_fine = client.get("/metric/visits/series?step=1s")
    assert too_fine.status_code == 400
    assert "at least 1000278us" in too_fine.get_json()["detail"]
    assert client.get("/metric/visits/series?step=1000278us").status_code == 200


def test_bad_key_is_a_400(client) -> None:
    response = client.get("/metric/bad%20key/series")
    assert response.status_code == 400
    assert "key must be" in response.get_json()["detail"]


def test_the_series_body_is_spaced_like_every_other_body(client) -> None:
    """Like json.dumps: ", " between items and ": " after names, so clients that compare
    or log bodies see one style everywhere."""
    client.post("/metric/spaced", json={"value": 2})
    body = client.get("/metric/spaced/series?step=30m").get_data(as_text=True)
    assert body == json.dumps(json.loads(body))
