"""RINGSUM_API_TOKEN: a bearer token on every /metric... route and /metrics.

Auth sits in front of the storage and does not depend on it: the routes x credentials
matrix runs on memory storage, and one smoke test shows the same guard on Redis."""

from __future__ import annotations

import re

import pytest

TOKEN = "s3cret-tok€n"  # not ASCII on purpose: clients send it as UTF-8
AUTHORIZED = {"Authorization": "Bearer " + TOKEN.encode().decode("latin-1")}  # as WSGI hands it over

# (method, path, JSON body, status when authorized)
GUARDED = [
    ("POST", "/metric/visits", {"value": 3}, 200),
    ("POST", "/metric/visits/", {"value": 3}, 200),
    ("GET", "/metric/visits/sum", None, 200),
    ("GET", "/metric/visits/sum?window=5m", None, 200),
    ("GET", "/metric/visits/series?step=1m", None, 200),
    ("GET", "/metric", None, 200),
    ("GET", "/metric?prefix=v&limit=5", None, 200),
    ("POST", "/metric", [{"key": "visits", "value": 3}], 200),
    ("DELETE", "/metric/visits", None, 204),
    ("DELETE", "/metric/visits/", None, 204),
    ("GET", "/metrics", None, 200),
    ("GET", "/metric/a/b/c", None, 404),  # unknown paths under /metric reveal nothing either
    ("PUT", "/metric/visits", None, 405),
]
OPEN = ["/healthz", "/readyz", "/openapi.json", "/"]

WRONG_CREDENTIALS = [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Bearer wrong",
    "Bearer " + TOKEN[:-1],
    "Bearer " + TOKEN + "x",
    "Basic " + TOKEN,
    TOKEN,
    "Bearer \u4e00",  # cannot come off the wire, must not crash
]


@pytest.fixture
def guarded_client(make_memory_app):
    return make_memory_app(RINGSUM_API_TOKEN=TOKEN).test_client()


@pytest.fixture
def open_client(make_memory_app):
    return make_memory_app().test_client()


def send(client, method: str, path: str, body, headers=None):
    return client.open(path, method=method, json=body, headers=headers or {})


@pytest.mark.parametrize("method, path, body, _", GUARDED)
@pytest.mark.parametrize("authorization", WRONG_CREDENTIALS)
def test_guarded_routes_refuse_a_missing_or_wrong_token(guarded_client, method, path, body, _, authorization) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = send(guarded_client, method, path, body, headers)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    problem = response.get_json()
    assert problem["status"] == 401 and "Authorization: Bearer" in problem["detail"]
    assert TOKEN not in response.get_data(as_text=True)


@pytest.mark.parametrize("method, path, body, status", GUARDED)
def test_guarded_routes_answer_with_the_token(guarded_client, method, path, body, status) -> None:
    assert send(guarded_client, method, path, body, AUTHORIZED).status_code == status


def test_a_refused_request_changes_nothing(guarded_client) -> None:
    send(guarded_client, "POST", "/metric/visits", {"value": 5}, AUTHORIZED)
    assert guarded_client.post("/metric/visits", json={"value": 100}).status_code == 401
    assert guarded_client.post("/metric", json=[{"key": "visits", "value": 100}]).status_code == 401
    assert guarded_client.delete("/metric/visits", headers={"Authorization": "Bearer nope"}).status_code == 401
    response = send(guarded_client, "GET", "/metric/visits/sum", None, AUTHORIZED)
    assert response.get_json() == {"value": 5}


def test_the_scheme_is_case_insensitive(guarded_client) -> None:
    headers = {"Authorization": AUTHORIZED["Authorization"].replace("Bearer", "bearer")}
    assert guarded_client.get("/metric", headers=headers).status_code == 200


@pytest.mark.parametrize("path", OPEN)
def test_open_routes_need_no_token(guarded_client, path: str) -> None:
    assert guarded_client.get(path).status_code == 200
    assert guarded_client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 200


def test_every_metric_route_is_guarded(guarded_client) -> None:
    """Routes added later under /metric are guarded too: every rule and method is tried."""
    for rule in guarded_client.application.url_map.iter_rules():
        if not rule.rule.startswith("/metric"):
            continue
        path = re.sub(r"<[^>]+>", "visits", rule.rule)
        for method in rule.methods - {"OPTIONS", "HEAD"}:
            assert guarded_client.open(path, method=method).status_code == 401, (method, rule.rule)


@pytest.mark.parametrize("method, path, body, status", GUARDED)
def test_without_a_token_setting_everything_is_open(open_client, method, path, body, status) -> None:
    assert send(open_client, method, path, body).status_code == status
    assert send(open_client, method, path, body, {"Authorization": "Bearer anything"}).status_code == status


@pytest.mark.parametrize("backend", ["redis", "cluster"], indirect=True)
def test_the_token_guards_redis_storage_alike(make_app) -> None:
    client = make_app(RINGSUM_API_TOKEN=TOKEN).test_client()
    assert client.post("/metric/visits", json={"value": 2}).status_code == 401
    assert send(client, "POST", "/metric/visits", {"value": 3}, AUTHORIZED).status_code == 200
    assert send(client, "GET", "/metric/visits/sum", None, AUTHORIZED).get_json() == {"value": 3}
