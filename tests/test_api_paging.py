"""Paging GET /metric with ``next`` and ``after=``: every key exactly once, in order."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import chain

import pytest
from flask import Flask
from flask.testing import FlaskClient
from freezegun import freeze_time

import ringsum.storage.memory as memory_storage

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def record_keys(client: FlaskClient, keys: list[str], value: int = 1) -> None:
    for start in range(0, len(keys), 10_000):
        events = [{"key": key, "value": value} for key in keys[start : start + 10_000]]
        assert client.post("/metric", json=events).status_code == 200


def page(client: FlaskClient, query: str) -> dict:
    response = client.get(f"/metric?{query}")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert set(body) <= {"metrics", "next"}
    assert body.get("next", "absent") is not None, "next is absent on the last page, never null"
    return body


def walk(
    client: FlaskClient, query: str, after: str | None = None, between_pages: Callable[[int], None] = lambda _: None
) -> list[list]:
    """Every page's keys from ``after`` on, following ``next`` until it is absent."""
    pages = []
    while True:
        body = page(client, query + (f"&after={after}" if after else ""))
        pages.append([metric["key"] for metric in body["metrics"]])
        if "next" not in body:
            return pages
        assert body["next"] == pages[-1][-1], "next is the last key of the page"
        after = body["next"]
        between_pages(len(pages))


def test_paging_walks_every_key_once_in_order(client) -> None:
    keys = [f"k{index:04d}" for index in range(2500)]
    record_keys(client, keys[::-1])
    pages = walk(client, "limit=1000")
    assert [len(keys_on_page) for keys_on_page in pages] == [1000, 1000, 500]
    assert list(chain.from_iterable(pages)) == keys


def test_a_last_page_that_is_exactly_full_has_no_next(client) -> None:
    record_keys(client, [f"k{index}" for index in range(4)])
    first = page(client, "limit=2")
    assert first == {"metrics": [{"key": "k0", "value": 1}, {"key": "k1", "value": 1}], "next": "k1"}
    assert page(client, "limit=2&after=k1") == {"metrics": [{"key": "k2", "value": 1}, {"key": "k3", "value": 1}]}
    assert page(client, "limit=4") == {"metrics": [{"key": f"k{index}", "value": 1} for index in range(4)]}


def test_paging_with_a_prefix(client) -> None:
    keys = [f"{group}.{index:02d}" for group in ("api", "apix", "web") for index in range(7)]
    record_keys(client, keys)
    pages = walk(client, "prefix=api.&limit=3")
    assert pages == [["api.00", "api.01", "api.02"], ["api.03", "api.04", "api.05"], ["api.06"]]
    # after may lie before, inside or past the prefix's keys.
    assert [m["key"] for m in page(client, "prefix=web&after=api.03&limit=2")["metrics"]] == ["web.00", "web.01"]
    assert [m["key"] for m in page(client, "prefix=api&after=api.05")["metrics"]] == ["api.06", *keys[7:14]]
    assert page(client, "prefix=api.&after=apiz") == {"metrics": []}
    assert page(client, "after=zzz") == {"metrics": []}


def test_keys_added_and_deleted_between_pages(client) -> None:
    stay = [f"m{index:02d}" for index in range(0, 40, 2)]
    doomed = [f"m{index:02d}" for index in range(1, 40, 2)]
    record_keys(client, stay + doomed)
    added = []

    def change(pages_done: int) -> None:
        # Behind the cursor, ahead of it, and deletions ahead of it.
        new = [f"a{pages_done}", f"m{pages_done * 4:02d}x", f"z{pages_done}"]
        record_keys(client, new)
        added.extend(new)
        for key in doomed[pages_done * 2 : pages_done * 2 + 4]:
            assert client.delete(f"/metric/{key}").status_code == 204

    listed = list(chain.from_iterable(walk(client, "limit=5", between_pages=change)))
    assert listed == sorted(listed) and len(listed) == len(set(listed)), "in order, none twice"
    assert set(stay) <= set(listed), "every key live throughout is listed"
    assert set(listed) <= set(stay + doomed + added)


def test_keys_that_expire_between_pages_are_skipped_and_the_rest_listed_once(client) -> None:
    with freeze_time(NOW) as clock:
        old = [f"k{index:02d}" for index in range(0, 30, 3)]
        record_keys(client, old)
        clock.tick(timedelta(minutes=30))
        recent = sorted(set(f"k{index:02d}" for index in range(30)) - set(old))
        record_keys(client, recent, value=2)

        first = page(client, "limit=4")
        assert [m["key"] for m in first["metrics"]] == ["k00", "k01", "k02", "k03"]
        clock.tick(timedelta(minutes=31))  # the old keys age out between pages
        rest = list(chain.from_iterable(walk(client, "limit=4", after=first["next"])))
        assert rest == [key for key in recent if key > "k03"]


def test_a_page_lists_each_key_with_its_sum(client) -> None:
    record_keys(client, ["b", "a"], value=3)
    record_keys(client, ["a"], value=4)
    assert page(client, "limit=1") == {"metrics": [{"key": "a", "value": 7}], "next": "a"}
    assert page(client, "limit=1&after=a") == {"metrics": [{"key": "b", "value": 3}]}


@pytest.mark.parametrize("after", ["", "a%20b", "a/b", "%D9%A3", "a" * 201])
def test_a_bad_after_is_a_400_problem(client, after: str) -> None:
    record_keys(client, ["a"])
    response = client.get(f"/metric?after={after}")
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["detail"].startswith("after must be 1-200 characters")


def test_listing_100k_keys_on_memory_is_fast_and_right(make_memory_app: Callable[..., Flask]) -> None:
    client = make_memory_app().test_client()
    keys = [f"key{index:06d}" for index in range(100_000)]
    record_keys(client, keys[::-1])
    answers = {}
    started = time.perf_counter()
    for query in ("limit=1", "limit=100", "prefix=key05&limit=3", "after=key099998", "prefix=key0999&limit=100"):
        answers[query] = page(client, query)
    elapsed = time.perf_counter() - started
    assert answers["limit=1"] == {"metrics": [{"key": "key000000", "value": 1}], "next": "key000000"}
    assert [m["key"] for m in answers["limit=100"]["metrics"]] == keys[:100]
    assert [m["key"] for m in answers["prefix=key05&limit=3"]["metrics"]] == keys[50_000:50_003]
    assert answers["after=key099998"] == {"metrics": [{"key": "key099999", "value": 1}]}
    assert [m["key"] for m in answers["prefix=key0999&limit=100"]["metrics"]] == keys[99_900:]
    assert "next" not in answers["prefix=key0999&limit=100"]
    assert elapsed < 1.0, f"five small pages of 100k keys took {elapsed:.3f} s (a sort of every key would take longer)"


def test_memory_pages_read_in_slices_skip_expired_keys_across_slices(
    make_memory_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_storage, "LIST_SLICE", 3)  # a 4-key page spans slices
    client = make_memory_app().test_client()
    with freeze_time(NOW) as clock:
        record_keys(client, [f"k{index:02d}" for index in range(0, 20, 2)])
        clock.tick(timedelta(minutes=30))
        live = [f"k{index:02d}" for index in range(1, 20, 2)]
        record_keys(client, live)
        clock.tick(timedelta(minutes=31))  # the even keys aged out, not yet swept
        assert walk(client, "limit=4") == [live[:4], live[4:8], live[8:]]
