"""RINGSUM_EXPORT: window sums on /metrics as ringsum_window_sum{key=...}, on every
storage, read through the listing a page at a time, capped by RINGSUM_EXPORT_MAX_KEYS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time
from test_observability import scrape

from ringsum import load_settings
from ringsum.config import ConfigError
from ringsum.web import export

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def exported(samples) -> dict[str, float]:
    return {dict(labels)["key"]: value for labels, value in samples.get("ringsum_window_sum", {}).items()}


def dropped(samples) -> float:
    return samples["ringsum_window_sum_keys_dropped"][()]


def post(client, key: str, value: int) -> None:
    assert client.post(f"/metric/{key}", json={"value": value}).status_code == 200


def test_the_sums_of_the_live_keys_under_the_prefixes_as_of_the_scrape(make_app) -> None:
    client = make_app(RINGSUM_EXPORT="api.,orders.").test_client()
    for key, value in (("api.a", 1), ("api.a", 2), ("api.b", 5), ("orders.x", 7), ("other.y", 9), ("api", 4)):
        post(client, key, value)
    samples = scrape(client)
    assert exported(samples) == {"api.a": 3, "api.b": 5, "orders.x": 7}
    assert dropped(samples) == 0
    post(client, "api.a", 10)
    assert client.delete("/metric/api.b").status_code == 204
    assert exported(scrape(client)) == {"api.a": 13, "orders.x": 7}


def test_keys_leave_the_export_when_their_values_age_out(make_app) -> None:
    client = make_app(RINGSUM_EXPORT="*").test_client()
    with freeze_time(NOW) as clock:
        post(client, "early", 1)
        clock.move_to(NOW + timedelta(minutes=30))
        post(client, "late", 2)
        assert exported(scrape(client)) == {"early": 1, "late": 2}
        clock.move_to(NOW + timedelta(hours=1, seconds=1))
        assert exported(scrape(client)) == {"late": 2}


def test_the_cap_exports_the_first_keys_in_key_order_across_pages_and_counts_the_rest(make_app, monkeypatch) -> None:
    monkeypatch.setattr(export, "PAGE", 2)  # several listing pages from a few keys
    client = make_app(RINGSUM_EXPORT="*", RINGSUM_EXPORT_MAX_KEYS="3").test_client()
    batch = [{"key": f"k{index}", "value": index + 1} for index in (6, 2, 0, 5, 1, 4, 3)]
    assert client.post("/metric", json=batch).status_code == 200
    for _ in range(2):  # the same series scrape after scrape
        samples = scrape(client)
        assert exported(samples) == {"k0": 1, "k1": 2, "k2": 3}
        assert dropped(samples) == 4


def test_counting_the_dropped_keys_stops_at_a_bound(make_memory_app, monkeypatch) -> None:
    monkeypatch.setattr(export, "COUNT_BEYOND", 2)
    client = make_memory_app(RINGSUM_EXPORT="k", RINGSUM_EXPORT_MAX_KEYS="2").test_client()
    assert client.post("/metric", json=[{"key": f"k{index:02d}", "value": 1} for index in range(20)]).status_code == 200
    samples = scrape(client)
    assert exported(samples) == {"k00": 1, "k01": 1}
    assert dropped(samples) == 4  # at least: 2 x the cap


def test_the_listing_is_read_in_pages_never_all_at_once(make_app, monkeypatch) -> None:
    app = make_app(RINGSUM_EXPORT="*")
    client = app.test_client()
    assert client.post("/metric", json=[{"key": f"k{index}", "value": 1} for index in range(5)]).status_code == 200
    monkeypatch.setattr(export, "PAGE", 2)
    from ringsum.web import state

    storage = state.storage(app)
    calls = []
    listing = storage.keys
    monkeypatch.setattr(storage, "keys", lambda *args: calls.append(args) or listing(*args))
    assert len(exported(scrape(client))) == 5
    assert calls == [("", 2, ""), ("", 2, "k1"), ("", 2, "k3")]


@pytest.mark.parametrize(
    "written, prefixes",
    [("", ()), ("*", ("",)), ("api., orders.", ("api.", "orders.")), ("b,a,a.x", ("a", "b")), ("x,*", ("",))],
)
def test_the_setting_takes_prefixes_or_a_star(written: str, prefixes: tuple[str, ...]) -> None:
    assert load_settings({"RINGSUM_EXPORT": written}, environ={}).export == prefixes


@pytest.mark.parametrize("written", ["api.,", "a b", "a/b", "x" * 201])
def test_a_prefix_no_key_can_start_with_is_refused(written: str) -> None:
    with pytest.raises(ConfigError, match=r"RINGSUM_EXPORT=.*comma-separated key prefixes"):
        load_settings({"RINGSUM_EXPORT": written}, environ={})
    with pytest.raises(ConfigError, match="RINGSUM_EXPORT_MAX_KEYS"):
        load_settings({"RINGSUM_EXPORT_MAX_KEYS": "0"}, environ={})
