"""The challenge's two endpoints, through HTTP, on every backend."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
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


def test_the_bodies_are_exactly_the_challenges(client) -> None:
    posted = client.post("/metric/visits", json={"value": 30})
    assert posted.status_code == 200 and posted.mimetype == "application/json"
    assert json.loads(posted.get_data()) == {}
    client.post("/metric/visits", json={"value": 370})
    summed = client.get("/metric/visits/sum")
    assert summed.status_code == 200 and summed.mimetype == "application/json"
    body = json.loads(summed.get_data())
    assert body == {"value": 400} and type(body["value"]) is int  # no extra field, never a float


def test_a_field_besides_value_is_refused_by_name(client) -> None:
    response = client.post("/metric/visits", json={"value": 2, "unit": "people"})
    assert response.status_code == 422 and response.mimetype == "application/problem+json"
    assert "'unit'" in response.get_json()["detail"] and '{"value": 3}' in response.get_json()["detail"]
    assert client.get("/metric/visits/sum").get_json() == {"value": 0}


def test_a_key_never_posted_sums_to_zero(client) -> None:
    response = client.get("/metric/never_posted/sum")
    assert response.status_code == 200
    assert response.get_json() == {"value": 0}


def test_a_key_whose_values_all_aged_out_sums_to_zero(client) -> None:
    with freeze_time("2026-01-01 12:00:00") as clock:
        client.post("/metric/faded", json={"value": 9})
        clock.tick(timedelta(hours=1, seconds=1))
        response = client.get("/metric/faded/sum")
    assert response.status_code == 200 and response.get_json() == {"value": 0}


def test_a_trailing_slash_is_served_without_a_redirect(client) -> None:
    response = client.post("/metric/visits/", json={"value": 3})
    assert response.status_code == 200 and "Location" not in response.headers
    assert response.get_json() == {}
    assert client.get("/metric/visits/sum").get_json() == {"value": 3}


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/x-www-form-urlencoded", None])
def test_the_body_is_json_whatever_its_content_type(client, content_type: str | None) -> None:
    # curl -d '{"value": 3}' sends it as a form; the test client sends no type at all for None.
    response = client.post("/metric/visits", data=b'{"value": 3}', content_type=content_type)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert client.get("/metric/visits/sum").get_json() == {"value": 3}


def test_a_json_body_may_start_with_a_byte_order_mark(client) -> None:
    assert client.post("/metric/visits", data='\ufeff{"value": 3}'.encode()).status_code == 200
    assert client.post("/metric", data='\ufeff[{"key": "visits", "value": 4}]'.encode()).status_code == 200
    assert client.get("/metric/visits/sum").get_json() == {"value": 7}


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", None])
def test_a_form_body_with_a_value_is_accepted(client, content_type: str | None) -> None:
    # curl -d value=3 sends a form.
    assert client.post("/metric/visits", data=b"value=3", content_type=content_type).status_code == 200
    assert client.post("/metric/visits", data={"value": "-1.5", "note": "x"}).status_code == 200
    assert client.get("/metric/visits/sum").get_json() == {"value": 1}


def test_keys_are_independent(client) -> None:
    client.post("/metric/a", json={"value": 1})
    client.post("/metric/b", json={"value": 2})
    client.post("/metric/A", json={"value": 4})
    assert [client.get(f"/metric/{key}/sum").get_json()["value"] for key in ("a", "b", "A")] == [1, 2, 4]
