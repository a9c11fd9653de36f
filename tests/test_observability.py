"""GET /healthz, /readyz and /metrics (Prometheus text, parsed back)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time
from prometheus_client.parser import text_string_to_metric_families

from ringsum import create_app
from ringsum.storage import StorageIncompatible, StorageUnavailable
from ringsum.version import __version__
from ringsum.web import state
from ringsum.web.observability import STORAGE_ERROR_CAUSES
from ringsum.web.state import close_app

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
CAUSES = sorted(STORAGE_ERROR_CAUSES.values())
NO_ERRORS = dict.fromkeys(CAUSES, 0)


def scrape(client, headers=None) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted labels: value}} from GET /metrics."""
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def requests_counted(samples, route: str, method: str, status: int) -> float:
    labels = (("method", method), ("route", route), ("status", str(status)))
    return samples.get("ringsum_http_requests_total", {}).get(labels, 0)


def errors_by_cause(samples) -> dict[str, float]:
    return {dict(labels)["error"]: value for labels, value in samples["ringsum_storage_errors_total"].items()}


def make_storage_unreachable(monkeypatch, app) -> None:
    """Stand-in for a backend that cannot be reached (memory storage always answers)."""

    def unreachable(*_, **__):
        raise StorageUnavailable("connection refused")

    storage = state.storage(app)
    for operation in ("ping", "record", "total", "stats"):
        monkeypatch.setattr(storage, operation, unreachable)


# -- health and readiness ---------------------------------------------------------


def test_healthz(client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == {"status": "ok", "version": __version__}


def test_readyz_when_storage_answers(client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready"}


@pytest.fixture
def memory_app(make_memory_app):
    return make_memory_app()


def test_readyz_is_503_with_retry_after_when_storage_is_unreachable(memory_app, monkeypatch) -> None:
    make_storage_unreachable(monkeypatch, memory_app)
    client = memory_app.test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert int(response.headers["Retry-After"]) >= 1
    assert "storage is unreachable" in response.get_json()["detail"]
    assert client.get("/healthz").status_code == 200  # the process still serves


# -- Prometheus -------------------------------------------------------------------


def test_counters_after_a_known_sequence_of_requests(client) -> None:
    before = scrape(client)
    assert requests_counted(before, "/metric/<key>", "POST", 200) == 0
    for value in (1, 2, 3):
        assert client.post("/metric/visits", json={"value": value}).status_code == 200
    assert client.post("/metric/visits/", json={"value": 4}).status_code == 200
    assert client.post("/metric/visits", json={"value": "x"}).status_code == 422
    assert client.post("/metric", json=[{"key": "a", "value": 1}, {"key": "b", "value": 1}]).status_code == 200
    assert client.post("/metric", json=[{"key": "a", "value": None}]).status_code == 422
    for _ in range(2):
        assert client.get("/metric/visits/sum").status_code == 200
    assert client.get("/metric/visits/sum?window=0").status_code == 400
    assert client.get("/no/such/page").status_code == 404
    assert client.open("/metric/visits", method="BREW").status_code == 405

    samples = scrape(client)
    assert requests_counted(samples, "/metric/<key>", "POST", 200) == 3
    assert requests_counted(samples, "/metric/<key>/", "POST", 200) == 1
    assert requests_counted(samples, "/metric/<key>", "POST", 422) == 1
    assert requests_counted(samples, "/metric", "POST", 200) == 1
    assert requests_counted(samples, "/metric", "POST", 422) == 1
    assert requests_counted(samples, "/metric/<key>/sum", "GET", 200) == 2
    assert requests_counted(samples, "/metric/<key>/sum", "GET", 400) == 1
    assert requests_counted(samples, "/metrics", "GET", 200) == 1  # the first scrape
    # Unrouted requests share one label each: raw paths and junk methods add no series.
    assert requests_counted(samples, "unmatched", "GET", 404) == 1
    assert requests_counted(samples, "unmatched", "other", 405) == 1
    assert samples["ringsum_values_recorded_total"][()] == 4 + 2
    # The latency histogram has no status label (each value would multiply its series):
    # one histogram per route and method, whatever the answers were.
    latency = samples["ringsum_http_request_duration_seconds_count"]
    assert latency[(("method", "GET"), ("route", "/metric/<key>/sum"))] == 2 + 1
    assert latency[(("method", "POST"), ("route", "/metric/<key>"))] == 3 + 1
    assert samples["ringsum_http_request_duration_seconds_sum"][(("method", "GET"), ("route", "/metric/<key>/sum"))] > 0
    assert {name for labels in latency for name, _ in labels} == {"method", "route"}
    assert samples["ringsum_keys"][()] == 3
    assert samples["ringsum_entries"][()] >= 3
    # Every cause reads 0 from the start, so an alert on it never sees "no data".
    assert samples["ringsum_storage_errors_total"] == {(("error", cause),): 0 for cause in CAUSES}
    assert samples["ringsum_ready"][()] == 1
    assert samples["ringsum_workers"][()] == 1
    assert "ringsum_window_sum" not in samples  # RINGSUM_EXPORT is empty by default


def test_each_app_counts_only_its_own_requests(make_app) -> None:
    first, second = make_app().test_client(), make_app().test_client()
    first.post("/metric/visits", json={"value": 1})
    assert requests_counted(scrape(first), "/metric/<key>", "POST", 200) == 1
    assert requests_counted(scrape(second), "/metric/<key>", "POST", 200) == 0


def test_metrics_needs_the_token_when_one_is_set(make_app) -> None:
    client = make_app(RINGSUM_API_TOKEN="s3cret").test_client()
    assert client.get("/metrics").status_code == 401
    assert scrape(client, {"Authorization": "Bearer s3cret"})


def test_evictions_and_sweep_duration_on_memory_storage(memory_app) -> None:
    client = memory_app.test_client()
    storage = state.storage(memory_app)
    with freeze_time(NOW) as clock:
        for second in range(3):
            clock.move_to(NOW + timedelta(seconds=second))
            client.post("/metric/visits", json={"value": 1})
        samples = scrape(client)
        assert samples["ringsum_entries"][()] == 3
        assert samples["ringsum_evictions_total"][()] == 0
        clock.move_to(NOW + timedelta(hours=1, seconds=2))  # the first two entries aged out
        assert client.get("/metric/visits/sum").get_json() == {"value": 1}
        storage.sweep()
        samples = scrape(client)
    assert samples["ringsum_evictions_total"][()] == 2
    assert samples["ringsum_entries"][()] == 1
    assert samples["ringsum_keys"][()] == 1
    assert samples["ringsum_sweep_duration_seconds"][()] == storage.last_sweep_seconds


def test_the_sweep_duration_is_the_time_the_last_sweep_took(memory_app, monkeypatch) -> None:
    readings = iter([100.0, 100.25])  # the sweep reads the clock when it starts and when it ends
    monkeypatch.setattr("ringsum.storage.memory.time.perf_counter", lambda: next(readings))
    state.storage(memory_app).sweep()
    monkeypatch.undo()
    assert scrape(memory_app.test_client())["ringsum_sweep_duration_seconds"][()] == 0.25


def test_key_limit_refusals_count_as_storage_errors() -> None:
    app = create_app({"RINGSUM_STORAGE_URI": "memory://", "RINGSUM_MAX_KEYS": "1"})
    client = app.test_client()
    try:
        client.post("/metric/a", json={"value": 1})
        assert client.post("/metric/b", json={"value": 1}).status_code == 507
        assert client.post("/metric", json=[{"key": "c", "value": 1}]).status_code == 507
        samples = scrape(client)
    finally:
        close_app(app)
    assert errors_by_cause(samples) == {**NO_ERRORS, "key_limit": 2}
    assert samples["ringsum_values_recorded_total"][()] == 1
    assert samples["ringsum_max_keys"][()] == 1


def test_the_idempotency_marker_limit_counts_as_marker_limit_not_key_limit(make_memory_app) -> None:
    """Both are 507s: the label is the refusal's cause, not its status."""
    client = make_memory_app(RINGSUM_MAX_IDEMPOTENCY_KEYS="1").test_client()
    assert client.post("/metric/a", json={"value": 1}, headers={"Idempotency-Key": "one"}).status_code == 200
    assert client.post("/metric/a", json={"value": 1}, headers={"Idempotency-Key": "two"}).status_code == 507
    assert errors_by_cause(scrape(client)) == {**NO_ERRORS, "marker_limit": 1}


def test_a_layout_written_by_a_newer_ringsum_counts_as_incompatible(memory_app, monkeypatch) -> None:
    def incompatible(*_, **__):
        raise StorageIncompatible("holds ringsum's data in key layout 99")

    monkeypatch.setattr(state.storage(memory_app), "total", incompatible)
    client = memory_app.test_client()
    assert client.get("/metric/a/sum").status_code == 503
    assert errors_by_cause(scrape(client)) == {**NO_ERRORS, "incompatible": 1}


def test_unreachable_storage_counts_as_storage_errors_and_metrics_still_serve(memory_app, monkeypatch) -> None:
    make_storage_unreachable(monkeypatch, memory_app)
    client = memory_app.test_client()
    assert client.post("/metric/a", json={"value": 1}).status_code == 503
    assert client.get("/metric/a/sum").status_code == 503
    assert client.get("/readyz").status_code == 503
    samples = scrape(client)  # the storage gauges are left out, the rest still serves
    assert "ringsum_keys" not in samples
    assert samples["ringsum_ready"][()] == 0
    assert samples["ringsum_storage_errors_total"][(("error", "unavailable"),)] >= 3
    assert requests_counted(samples, "/metric/<key>", "POST", 503) == 1
    assert samples["ringsum_values_recorded_total"][()] == 0


def test_the_storage_and_its_limits_are_on_metrics(backend, make_app) -> None:
    samples = scrape(make_app(RINGSUM_MAX_KEYS="500").test_client())
    [(labels, value)] = samples["ringsum_storage_info"].items()
    scheme = {"memory": "memory", "redis": "redis", "cluster": "redis+cluster"}[backend]
    assert dict(labels) == {"backend": scheme, "journal": "off"} and value == 1  # the test apps keep no data dir
    if backend == "memory":
        assert samples["ringsum_max_keys"][()] == 500
    else:  # Redis is bounded by its maxmemory, not by RINGSUM_MAX_KEYS
        assert "ringsum_max_keys" not in samples


def test_the_journal_label_is_the_fsync_mode_of_a_data_dir(make_memory_app, tmp_path) -> None:
    client = make_memory_app(RINGSUM_DATA_DIR=str(tmp_path), RINGSUM_FSYNC="always").test_client()
    [labels] = scrape(client)["ringsum_storage_info"]
    assert dict(labels) == {"backend": "memory", "journal": "always"}


def test_shared_metrics_count_evictions_once_and_keep_every_family(make_memory_app, tmp_path, monkeypatch) -> None:
    """In process, the mode --workers N runs each worker in: values in the shared
    directory, the storage's per-process evictions mirrored there, the same families."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    app = make_memory_app()
    client = app.test_client()
    with freeze_time(NOW) as clock:
        for second in range(3):
            clock.move_to(NOW + timedelta(seconds=second))
            client.post("/metric/visits", json={"value": 1})
        clock.move_to(NOW + timedelta(hours=1, seconds=2))
        assert client.get("/metric/visits/sum").get_json() == {"value": 1}
        state.storage(app).sweep()
        samples = scrape(client)
    assert sorted(path.name.split("_")[0] for path in tmp_path.glob("*.db")) == ["counter", "gauge", "histogram"]
    assert samples["ringsum_evictions_total"][()] == 2
    assert requests_counted(samples, "/metric/<key>", "POST", 200) == 3
    assert samples["ringsum_http_request_duration_seconds_count"][(("method", "POST"), ("route", "/metric/<key>"))] == 3
    assert samples["ringsum_storage_errors_total"] == {(("error", cause),): 0 for cause in CAUSES}
    assert samples["ringsum_workers"][()] == 1 and samples["ringsum_keys"][()] == 1
