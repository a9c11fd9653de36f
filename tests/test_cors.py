"""CORS (RINGSUM_CORS_ORIGINS): off by default; the origins it names get
Access-Control-Allow-Origin on every answer and a 204 to their preflights; any other
origin gets no CORS header at all, so the browser keeps refusing it."""

from __future__ import annotations

import pytest
import requests
from flask import Flask
from serving import serving

from ringsum import load_settings
from ringsum.config import ConfigError

APP_ORIGIN = "https://app.example.com"
TOKEN = "s3cret"


def preflight(client, path: str, origin: str, method: str = "POST", headers: str = "content-type, authorization"):
    return client.options(
        path,
        headers={"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers},
    )


@pytest.fixture
def cors_app(make_memory_app) -> Flask:
    return make_memory_app(RINGSUM_CORS_ORIGINS=f"{APP_ORIGIN}, http://localhost:3000", RINGSUM_API_TOKEN=TOKEN)


def test_off_by_default_no_answer_carries_a_cors_header(make_memory_app) -> None:
    client = make_memory_app().test_client()
    answers = [
        client.post("/metric/a", json={"value": 1}, headers={"Origin": APP_ORIGIN}),
        client.get("/metric/a/sum", headers={"Origin": APP_ORIGIN}),
        preflight(client, "/metric/a", APP_ORIGIN),
    ]
    for answer in answers:
        assert not [name for name, _ in answer.headers.items() if name.lower().startswith("access-control-")]
        assert "Origin" not in answer.headers.get("Vary", "")
    assert answers[2].status_code == 200  # Flask's own OPTIONS answer: the Allow header, nothing for CORS


def test_a_preflight_from_a_named_origin_is_a_204_naming_methods_and_headers(cors_app: Flask) -> None:
    answer = preflight(cors_app.test_client(), "/metric/visits", APP_ORIGIN, method="DELETE")
    assert answer.status_code == 204 and answer.data == b""
    assert answer.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert answer.headers["Access-Control-Allow-Methods"] == "DELETE, POST"  # both rules of the path
    allowed = {name.strip().lower() for name in answer.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {"authorization", "content-type", "idempotency-key"}
    assert int(answer.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in answer.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in answer.headers  # the token is a header, not a cookie


@pytest.mark.parametrize(
    "path, methods",
    [("/metric", "GET, POST"), ("/metric/visits/sum", "GET"), ("/metric/visits/series", "GET"), ("/metrics", "GET")],
)
def test_each_preflight_names_the_methods_of_its_path(cors_app: Flask, path: str, methods: str) -> None:
    answer = preflight(cors_app.test_client(), path, "http://localhost:3000", method="GET")
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Methods"] == methods


def test_answers_to_a_named_origin_carry_it_errors_included(cors_app: Flask) -> None:
    client = cors_app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}", "Origin": APP_ORIGIN}
    recorded = client.post("/metric/visits", json={"value": 3}, headers={**auth, "Idempotency-Key": "k-1"})
    summed = client.get("/metric/visits/sum", headers=auth)
    refused = client.get("/metric/visits/sum", headers={"Origin": APP_ORIGIN})  # no token: a 401 the page can read
    assert (recorded.status_code, summed.get_json(), refused.status_code) == (200, {"value": 3}, 401)
    for answer in (recorded, summed, refused):
        assert answer.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
        assert "Origin" in answer.headers["Vary"]
    exposed = {name.strip() for name in refused.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"Idempotent-Replayed", "Retry-After", "WWW-Authenticate"} <= exposed


@pytest.mark.parametrize(
    "origin", ["https://evil.example.com", "http://app.example.com", "https://app.example.com:8443"]
)
def test_other_origins_get_no_cors_header(cors_app: Flask, origin: str) -> None:
    client = cors_app.test_client()
    answers = [
        preflight(client, "/metric/visits", origin),
        client.get("/metric/visits/sum", headers={"Origin": origin, "Authorization": f"Bearer {TOKEN}"}),
        client.get("/healthz", headers={"Origin": origin}),
    ]
    assert answers[0].status_code == 401  # not answered as a preflight: the token's check runs, as for any request
    for answer in answers:
        assert "Access-Control-Allow-Origin" not in answer.headers
        assert "Origin" in answer.headers["Vary"]  # a cache keeps each origin's answer apart


def test_a_preflight_on_no_route_is_a_404_problem(cors_app: Flask) -> None:
    answer = preflight(cors_app.test_client(), "/nothing/here", APP_ORIGIN)
    assert answer.status_code == 404 and answer.mimetype == "application/problem+json"


@pytest.mark.parametrize(
    "written, read",
    [
        ("", ()),
        ("https://App.Example.COM", ("https://app.example.com",)),
        ("https://a.example:443/, http://b.example:80", ("https://a.example", "http://b.example")),
        ("http://localhost:3000,http://localhost:3000", ("http://localhost:3000",)),
        ("http://[::1]:8080", ("http://[::1]:8080",)),
    ],
)
def test_origins_are_read_as_browsers_send_them(written: str, read: tuple[str, ...]) -> None:
    assert load_settings({"RINGSUM_CORS_ORIGINS": written}, environ={}).cors_origins == read


@pytest.mark.parametrize(
    "written, says",
    [
        ("app.example.com", "scheme://host[:port]"),
        ("*", "scheme://host[:port]"),
        ("https://app.example.com/dashboard", "has a path"),
        ("ftp://files.example.com", "scheme://host[:port]"),
        ("https://user:pw@app.example.com", "scheme://host[:port]"),
        ("https://app.example.com:99999", "comma-separated origins"),
    ],
)
def test_what_is_not_an_origin_is_refused_saying_what_to_write(written: str, says: str) -> None:
    with pytest.raises(ConfigError, match="RINGSUM_CORS_ORIGINS") as refused:
        load_settings({"RINGSUM_CORS_ORIGINS": written}, environ={})
    assert says in str(refused.value)


@pytest.mark.process
def test_a_real_server_answers_a_preflight_and_a_cross_origin_post() -> None:
    """Through the edge, as a browser's requests arrive: OPTIONS with no body, then the POST."""
    with serving({"RINGSUM_CORS_ORIGINS": APP_ORIGIN}) as server:
        answer = requests.options(
            f"{server.url}/metric/visits",
            headers={"Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST"},
            timeout=10,
        )
        assert answer.status_code == 204
        assert answer.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
        assert answer.headers["Access-Control-Allow-Methods"] == "DELETE, POST"
        posted = requests.post(
            f"{server.url}/metric/visits", json={"value": 2}, headers={"Origin": APP_ORIGIN}, timeout=10
        )
        assert posted.status_code == 200 and posted.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
        other = requests.get(f"{server.url}/metric/visits/sum", headers={"Origin": "https://evil.example"}, timeout=10)
        assert other.json() == {"value": 2} and "Access-Control-Allow-Origin" not in other.headers
