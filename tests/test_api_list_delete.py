"""GET /metric?prefix=&limit=&after= lists live keys, a page at a time; DELETE /metric/<key> forgets one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def record(client, **values: int) -> None:
    for key, value in values.items():
        assert client.post(f"/metric/{key}", json={"value": value}).status_code == 200


def listed(client, query: str = "") -> list[dict]:
    response = client.get(f"/metric{query}")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert list(body) in (["metrics"], ["metrics", "next"])
    return body["metrics"]


def test_live_keys_are_listed_sorted_with_their_sums(client) -> None:
    record(client, visits=3, api_calls=2, signups=1, Visits=9)
    record(client, visits=4)
    assert listed(client) == [
        {"key": "Visits", "value": 9},
        {"key": "api_calls", "value": 2},
        {"key": "signups", "value": 1},
        {"key": "visits", "value": 7},
    ]


def test_nothing_recorded_lists_nothing(client) -> None:
    assert listed(client) == []


def test_prefix_and_limit(client) -> None:
    record(client, **{"api.a": 1, "api.b": 2, "api.c": 3, "web.a": 4})
    assert listed(client, "?prefix=api.") == [
        {"key": "api.a", "value": 1},
        {"key": "api.b", "value": 2},
        {"key": "api.c", "value": 3},
    ]
    assert listed(client, "?prefix=api.&limit=2") == [{"key": "api.a", "value": 1}, {"key": "api.b", "value": 2}]
    assert listed(client, "?prefix=web") == [{"key": "web.a", "value": 4}]
    assert listed(client, "?prefix=nothing") == []
    assert listed(client, "?prefix=") == listed(client)
    assert len(listed(client, "?limit=10000")) == 4


def test_the_default_limit_is_1000(client) -> None:
    events = [{"key": f"k{index:05d}", "value": 1} for index in range(1001)]
    client.post("/metric", json=events)
    body = client.get("/metric").get_json()
    assert len(body["metrics"]) == 1000
    assert body["metrics"][-1]["key"] == "k00999"
    assert body["next"] == "k00999"
    assert len(listed(client, "?limit=1001")) == 1001


def test_keys_whose_values_aged_out_are_not_listed(client) -> None:
    with freeze_time(NOW) as clock:
        record(client, old=1)
        clock.tick(timedelta(minutes=30))
        record(client, recent=2)
        clock.tick(timedelta(minutes=31))
        assert listed(client) == [{"key": "recent", "value": 2}]


@pytest.mark.parametrize(
    "query, detail",
    [
        ("?limit=0", "limit must be a whole number from 1 to 10000"),
        ("?limit=10001", "limit must be a whole number from 1 to 10000"),
        ("?limit=-1", "limit must be a whole number from 1 to 10000"),
        ("?limit=ten", "limit must be a whole number from 1 to 10000"),
        ("?limit=", "limit must be a whole number from 1 to 10000"),
        ("?limit=1.5", "limit must be a whole number from 1 to 10000"),
        ("?limit=%D9%A3", "limit must be a whole number from 1 to 10000"),  # an Arabic-Indic digit three
        ("?prefix=a/b", "prefix must be 0-200 characters"),
        ("?prefix=a%20b", "prefix must be 0-200 characters"),
        ("?prefix=" + "a" * 201, "prefix must be 0-200 characters"),
    ],
)
def test_bad_prefix_or_limit_is_a_400(client, query: str, detail: str) -> None:
    record(client, a=1)
    response = client.get(f"/metric{query}")
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["detail"].startswith(detail)


@pytest.mark.parametrize("path", ["/metric/visits", "/metric/visits/"])
def test_delete_forgets_the_key(client, path: str) -> None:
    record(client, visits=5, other=1)
    response = client.delete(path)
    assert response.status_code == 204
    assert response.data == b""
    assert "Content-Type" not in response.headers
    assert client.get("/metric/visits/sum").get_json() == {"value": 0}
    assert listed(client) == [{"key": "other", "value": 1}]
    record(client, visits=2)  # a key deleted starts over
    assert client.get("/metric/visits/sum").get_json() == {"value": 2}


def test_delete_is_idempotent(client) -> None:
    assert client.delete("/metric/never_seen").status_code == 204
    record(client, visits=5)
    assert client.delete("/metric/visits").status_code == 204
    assert client.delete("/metric/visits").status_code == 204
    assert listed(client) == []


def test_delete_of_a_bad_key_is_a_400(client) -> None:
    record(client, visits=5)
    response = client.delete("/metric/vis%20its")
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert listed(client) == [{"key": "visits", "value": 5}]
