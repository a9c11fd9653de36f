"""Errors (docs/api.md#errors): every one is an RFC 9457 problem, and a rejected request changes nothing.

They are decided before any storage is called, so they run on memory, with one of each
family on every storage."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from freezegun import freeze_time
from helpers import ON_MEMORY_ONLY, assert_problem, total


@ON_MEMORY_ONLY
def test_the_problem_object_has_exactly_the_rfc_fields(client) -> None:
    response = client.post("/metric/k", data=b'{"value": "3"}')
    assert response.get_json() == {
        "type": "about:blank",
        "title": "Unprocessable Content",
        "status": 422,
        "detail": "value must be a number, not string",
    }


@ON_MEMORY_ONLY
@pytest.mark.parametrize("path", ["/nope", "/metric/a/b", "/metric/a/sum/extra"])
def test_an_unknown_path_is_a_404_problem(client, path: str) -> None:
    assert_problem(client.get(path), 404, "endpoint")


@ON_MEMORY_ONLY
@pytest.mark.parametrize(
    "method, path, allowed",
    [("PUT", "/metric/k", {"POST"}), ("GET", "/metric/k", {"POST"}), ("PATCH", "/metric/k/sum", {"GET"})],
)
def test_a_wrong_method_is_a_405_problem_with_allow(client, method: str, path: str, allowed: set[str]) -> None:
    client.post("/metric/k", json={"value": 5})
    response = client.open(path, method=method, data=b'{"value": 1}')
    assert_problem(response, 405, method, "Allow")
    assert allowed <= {name.strip() for name in response.headers["Allow"].split(",")}
    assert total(client, "k") == 5


def test_routing_and_limit_refusals_change_nothing_on_any_storage(make_app) -> None:
    """The families here run on memory: they are answered before any storage is called.
    One of each, on every storage."""
    client = make_app(RINGSUM_MAX_BODY="1KiB").test_client()
    assert client.post("/metric/k", json={"value": 5}).status_code == 200
    refused = [
        client.post("/metric/k/sum/extra", json={"value": 1}),
        client.put("/metric/k", json={"value": 1}),
        client.post("/metric/k", data=b'{"value": 2}'.ljust(1025)),
    ]
    assert [response.status_code for response in refused] == [404, 405, 413]
    assert total(client, "k") == 5


@ON_MEMORY_ONLY
def test_a_body_over_the_limit_is_a_413_problem_and_records_nothing(make_app) -> None:
    client = make_app(RINGSUM_MAX_BODY="1KiB").test_client()
    at_limit = b'{"value": 2}'.ljust(1024)
    assert client.post("/metric/k", data=at_limit).status_code == 200
    assert_problem(client.post("/metric/k", data=at_limit + b" "), 413, "RINGSUM_MAX_BODY", "1024")
    assert_problem(client.post("/metric/k", data=b"value=3".ljust(5000, b"0")), 413, "RINGSUM_MAX_BODY")
    assert total(client, "k") == 2


@ON_MEMORY_ONLY
def test_a_streamed_body_over_the_limit_is_a_413_too(make_app) -> None:
    """A chunked body has no Content-Length to check up front: the limit holds all the same."""
    client = make_app(RINGSUM_MAX_BODY="1KiB").test_client()

    def post_streamed(body: bytes):
        return client.post(
            "/metric/k",
            input_stream=io.BytesIO(body),
            headers={"Transfer-Encoding": "chunked"},
            environ_overrides={"wsgi.input_terminated": True},  # as a server that de-chunks says
        )

    assert post_streamed(b'{"value": 2}'.ljust(1024)).status_code == 200
    assert_problem(post_streamed(b'{"value": 2}'.ljust(1025)), 413, "RINGSUM_MAX_BODY")
    assert_problem(post_streamed(b"value=" + b"0" * 2000 + b"1"), 413, "RINGSUM_MAX_BODY")
    assert total(client, "k") == 2


@ON_MEMORY_ONLY
def test_an_unexpected_exception_is_a_500_problem_without_internals(make_app) -> None:
    app = make_app()

    def explode() -> None:
        raise RuntimeError("secret-internal-state at /srv/ringsum/thing.py line 42")

    app.add_url_rule("/test-only/explode", view_func=explode)
    response = app.test_client().get("/test-only/explode")
    assert_problem(response, 500, "logged")
    body = response.get_data(as_text=True)
    assert "secret" not in body and "RuntimeError" not in body and ".py" not in body


def test_a_new_key_past_max_keys_is_a_507_until_keys_age_out(make_memory_app) -> None:
    # Memory storage only: on Redis, Redis's own maxmemory bounds the keys.
    client = make_memory_app(RINGSUM_MAX_KEYS="2", RINGSUM_WINDOW="1m").test_client()
    with freeze_time("2026-03-01 10:00:00") as clock:
        assert client.post("/metric/a", json={"value": 1}).status_code == 200
        assert client.post("/metric/b", json={"value": 2}).status_code == 200
        assert_problem(client.post("/metric/c", json={"value": 3}), 507, "RINGSUM_MAX_KEYS")
        assert total(client, "c") == 0
        # Keys already held still take values, and reading unknown keys adds none.
        assert client.post("/metric/a", json={"value": 1}).status_code == 200
        assert [total(client, f"unknown{n}") for n in range(5)] == [0] * 5
        clock.tick(timedelta(seconds=30))
        assert_problem(client.post("/metric/c", json={"value": 3}), 507)
        clock.tick(timedelta(seconds=31))  # a and b have aged out: their room is free
        assert client.post("/metric/c", json={"value": 3}).status_code == 200
        assert client.post("/metric/d", json={"value": 4}).status_code == 200
        assert [total(client, key) for key in "abcd"] == [0, 0, 3, 4]
        assert_problem(client.post("/metric/e", json={"value": 5}), 507)
