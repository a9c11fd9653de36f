"""POST /metric: a batch of events, validated whole and recorded all or nothing."""

from __future__ import annotations

import json

import pytest

from ringsum.web import state


def sums(client, *keys: str) -> dict[str, int]:
    return {key: client.get(f"/metric/{key}/sum").get_json()["value"] for key in keys}


def test_a_batch_records_every_event(client) -> None:
    events = [
        {"key": "a", "value": 1},
        {"key": "b", "value": 2.5},
        {"key": "a", "value": -0.4},
        {"key": "c", "value": 4},
    ]
    response = client.post("/metric", json=events)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == {"recorded": 4}
    assert sums(client, "a", "b", "c") == {"a": 1, "b": 3, "c": 4}


def test_the_body_is_read_as_json_whatever_its_content_type(client) -> None:
    response = client.post(
        "/metric", data='[{"key": "a", "value": 2}]', content_type="application/x-www-form-urlencoded"
    )
    assert response.get_json() == {"recorded": 1}
    assert sums(client, "a") == {"a": 2}


def test_an_empty_batch_records_nothing(client) -> None:
    assert client.post("/metric", json=[]).get_json() == {"recorded": 0}
    assert client.get("/metric").get_json() == {"metrics": []}


def test_ten_thousand_events_is_the_most(client) -> None:
    events = [{"key": f"k{index % 100}", "value": 1} for index in range(10_000)]
    assert client.post("/metric", json=events).get_json() == {"recorded": 10_000}
    listed = client.get("/metric").get_json()["metrics"]
    assert len(listed) == 100 and all(metric["value"] == 100 for metric in listed)


def test_more_than_ten_thousand_events_records_nothing(client) -> None:
    events = [{"key": "a", "value": 1}] * 10_001
    response = client.post("/metric", json=events)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert "at most 10000 events" in response.get_json()["detail"]
    assert "10001" in response.get_json()["detail"]
    assert sums(client, "a") == {"a": 0}


@pytest.mark.parametrize(
    "bad_event, detail",
    [
        ({"key": "b", "value": "3"}, "event at index 2: value must be a number, not string"),
        ({"key": "b", "value": True}, "event at index 2: value must be a number, not boolean"),
        ({"key": "b", "value": None}, "event at index 2: value must be a number, not null"),
        ({"key": "b", "value": 2**53}, "event at index 2: value must round to an integer within"),
        ({"key": "b/c", "value": 1}, "event at index 2: key must be 1-200 characters"),
        ({"key": "", "value": 1}, "event at index 2: key must be 1-200 characters"),
        ({"key": "k" * 201, "value": 1}, "event at index 2: key must be 1-200 characters"),
        ({"key": 7, "value": 1}, "event at index 2: key must be a string, not number"),
        ({"value": 1}, 'event at index 2: it has no "key"'),
        ({"key": "b"}, 'event at index 2: it has no "value"'),
        ({}, 'event at index 2: it has no "key" and "value"'),
        ([1], "event at index 2: it is a JSON array, not an object"),
        ("b=1", "event at index 2: it is a JSON string, not an object"),
    ],
)
def test_a_bad_event_in_the_middle_records_nothing(client, bad_event, detail: str) -> None:
    events = [{"key": "a", "value": 1}, {"key": "b", "value": 2}, bad_event, {"key": "c", "value": 3}]
    response = client.post("/metric", json=events)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["detail"].startswith(detail)
    assert sums(client, "a", "b", "c") == {"a": 0, "b": 0, "c": 0}
    assert client.get("/metric").get_json() == {"metrics": []}


def test_the_first_bad_event_is_named(client) -> None:
    events = [{"key": "a", "value": 1}, {"key": "a", "value": "x"}, {"key": "a", "value": "y"}]
    assert client.post("/metric", json=events).get_json()["detail"].startswith("event at index 1:")


@pytest.mark.parametrize(
    "body, status, detail",
    [
        (b"", 400, "the body is empty"),
        (b"   ", 400, "the body is empty"),
        (b"value=3", 400, "the body is not JSON"),
        (b"[{", 400, "the body is not JSON"),
        (b"\xff[]", 400, "the body is not JSON"),
        (b"[" * 100_000, 400, "nested too deeply"),
        (b'{"key": "a", "value": 1}', 422, "the body is a JSON object"),
        (b"3", 422, "the body is a JSON number"),
        (b"null", 422, "the body is a JSON null"),
    ],
)
def test_a_body_that_is_not_an_array_of_events_is_a_problem(client, body: bytes, status: int, detail: str) -> None:
    response = client.post("/metric", data=body, content_type="application/json")
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert detail in response.get_json()["detail"]
    assert client.get("/metric").get_json() == {"metrics": []}


def test_a_body_over_the_limit_is_413_and_records_nothing(make_app) -> None:
    client = make_app(RINGSUM_MAX_BODY="1KiB").test_client()
    events = [{"key": "a", "value": 1}] * 60
    assert len(json.dumps(events)) > 1024
    response = client.post("/metric", json=events)
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert sums(client, "a") == {"a": 0}


# -- memory storage only: its key limit, and how often the storage is called ---------


def test_a_batch_that_would_exceed_the_key_limit_is_507_and_records_nothing(make_memory_app) -> None:
    client = make_memory_app(RINGSUM_MAX_KEYS="3").test_client()
    client.post("/metric/a", json={"value": 1})
    events = [
        {"key": "a", "value": 1},
        {"key": "b", "value": 1},
        {"key": "c", "value": 1},
        {"key": "d", "value": 1},
    ]
    response = client.post("/metric", json=events)
    assert response.status_code == 507
    assert response.mimetype == "application/problem+json"
    assert sums(client, "a", "b", "c", "d") == {"a": 1, "b": 0, "c": 0, "d": 0}
    assert client.post("/metric", json=events[:3]).get_json() == {"recorded": 3}  # exactly at the limit


def test_a_batch_is_one_storage_call(make_memory_app) -> None:
    app = make_memory_app()
    storage = state.storage(app)
    calls = []
    record_many = storage.record_many

    def counting_record_many(events):
        calls.append(len(events))
        record_many(events)

    storage.record_many = counting_record_many
    storage.record = lambda *_: pytest.fail("a batch must not record event by event")
    events = [{"key": f"k{index}", "value": index} for index in range(500)]
    assert app.test_client().post("/metric", json=events).get_json() == {"recorded": 500}
    assert calls == [500]
