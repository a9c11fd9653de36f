"""The listing index on Redis and Cluster (``ringsum:index``): it stays right through
TTL expiry, DELETE and batches, stays bounded per request, and /metrics counts
without walking every key per scrape."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis
from flask import Flask
from freezegun import freeze_time

import ringsum.storage.redis as redis_storage
from ringsum.storage.redis import INDEX
from ringsum.web import state

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


pytestmark = pytest.mark.parametrize("backend", ["redis", "cluster"], indirect=True)


@pytest.fixture
def index_node(redis_primaries: list[redis.Redis]) -> redis.Redis | None:
    """A direct client to the node that holds the index (any node, on a single Redis)."""
    holder = None
    for client in redis_primaries:
        try:
            client.type(INDEX)
        except redis.exceptions.MovedError:
            continue
        holder = client
    return holder


def indexed(node: redis.Redis) -> list[str]:
    return [name.decode() for name in node.zrange(INDEX, 0, -1)]


def listed(client) -> list[tuple[str, int]]:
    body = client.get("/metric?limit=10000").get_json()
    return [(metric["key"], metric["value"]) for metric in body["metrics"]]


def test_new_keys_join_the_index_one_by_one_and_in_batches(client, index_node: redis.Redis) -> None:
    client.post("/metric/single", json={"value": 1})
    client.post("/metric", json=[{"key": f"batch{index}", "value": index} for index in range(50)])
    client.post("/metric/single", json={"value": 1})  # not new: nothing more to add
    assert indexed(index_node) == sorted(["single", *(f"batch{index}" for index in range(50))])
    assert listed(client)[-1] == ("single", 2)


def test_delete_takes_the_key_off_the_index(client, index_node: redis.Redis) -> None:
    client.post("/metric", json=[{"key": "kept", "value": 1}, {"key": "gone", "value": 2}])
    assert client.delete("/metric/gone").status_code == 204
    assert indexed(index_node) == ["kept"]
    client.post("/metric/gone", json={"value": 5})
    assert indexed(index_node) == ["gone", "kept"]
    assert listed(client) == [("gone", 5), ("kept", 1)]


def test_keys_that_aged_out_are_pruned_by_the_listing_and_rejoin_when_written(
    make_app: Callable[..., Flask], index_node: redis.Redis
) -> None:
    client = make_app().test_client()  # the app's frozen clock is passed to the scripts
    with freeze_time(NOW) as clock:
        client.post("/metric", json=[{"key": "old", "value": 1}, {"key": "older", "value": 1}])
        clock.tick(timedelta(minutes=30))
        client.post("/metric/recent", json={"value": 2})
        clock.tick(timedelta(minutes=31))
        assert indexed(index_node) == ["old", "older", "recent"]  # aged out, not yet pruned
        assert listed(client) == [("recent", 2)]
        assert indexed(index_node) == ["recent"]
        client.post("/metric/old", json={"value": 3})  # created again: indexed again
        assert indexed(index_node) == ["old", "recent"]
        assert listed(client) == [("old", 3), ("recent", 2)]


def test_a_listing_looks_past_a_bounded_number_of_expired_keys(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_storage, "_PRUNE_BUDGET", 5)
    client = make_app().test_client()
    with freeze_time(NOW) as clock:
        client.post("/metric", json=[{"key": f"dead{index:02d}", "value": 1} for index in range(20)])
        clock.tick(timedelta(minutes=30))
        client.post("/metric", json=[{"key": key, "value": 1} for key in ("a", "z1", "z2")])
        clock.tick(timedelta(minutes=31))
        pages, after = [], ""
        while True:
            body = client.get(f"/metric?limit=2{after}").get_json()
            pages.append([metric["key"] for metric in body["metrics"]])
            if "next" not in body:
                break
            after = f"&after={body['next']}"
    # Short pages (even empty ones) carry next while expired keys are pruned on the way.
    assert [key for keys in pages for key in keys] == ["a", "z1", "z2"]
    assert any(len(keys) < 2 for keys in pages[:-1])


def test_a_key_the_index_lost_is_listed_again_after_a_metrics_scrape(client, index_node: redis.Redis) -> None:
    """As after a crash between a Cluster write and its follow-up ZADD, or data written
    by a ringsum without the index: the census re-adds what it finds."""
    client.post("/metric", json=[{"key": "seen", "value": 1}, {"key": "lost", "value": 2}])
    index_node.zrem(INDEX, "lost")
    assert listed(client) == [("seen", 1)]
    assert client.get("/metrics").status_code == 200
    assert listed(client) == [("lost", 2), ("seen", 1)]


def test_unindexing_keeps_a_key_a_writer_created_meanwhile(app: Flask, index_node: redis.Redis) -> None:
    storage = state.storage(app)
    storage.record("raced", 1)  # as if written between the check and the removal
    storage._unindex(["raced"])
    assert indexed(index_node) == ["raced"]


def test_metrics_counts_advance_one_scan_step_per_scrape(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_storage, "_CENSUS_STEP", 10)
    storage = state.storage(make_app())
    storage.record_many([(f"k{index:03d}", 1) for index in range(300)])
    assert storage.count() == (300, 300)
    scrapes = [storage.stats() for _ in range(3)]
    assert all(stats.keys < 300 for stats in scrapes), "a scrape scans a step, not every key"
    for _ in range(500):
        if storage.stats().keys == 300:
            break
    stats = storage.stats()  # the last complete pass, until the next one completes
    assert (stats.keys, stats.entries) == (300, 300)
