"""The challenge's two endpoints, through HTTP, on every backend."""

from __future__ import annotations

from datetime import timedelta

from freezegun import freeze_time


def test_worked_example_from_the_challenge(client) -> None:
    with freeze_time("2026-01-01 12:00:00") as clock:
        for value, age in [
            (4, timedelta(hours=2)),
            (3, timedelta(minutes=30)),
            (7, timedelta(seconds=40)),
            (2, timedelta(seconds=5)),
        ]:
            clock.move_to("2026-01-01 12:00:00")
            clock.tick(timedelta(hours=2) - age)
            assert client.post("/metric/active_visitors", json={"value": value}).get_json() == {}
        clock.move_to("2026-01-01 14:00:00")
        response = client.get("/metric/active_visitors/sum")
    assert response.status_code == 200
    assert response.get_json() == {"value": 12}
