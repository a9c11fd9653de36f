"""Health, readiness and Prometheus metrics.

Each app has its own registry (test apps never collide). Per request only a dict
lookup, a counter increment and a histogram observation are paid; the label
children are cached per (route, method, status). What the storage holds (keys,
entries, evictions, sweep time) is read once per scrape, never per request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from time import perf_counter
from typing import Any

from flask import Blueprint, Flask, Response, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import state
from .state import metrics, storage
from .storage import Storage, StorageError
from .version import __version__
from .wire import REFUSAL_REASONS

log = logging.getLogger(__name__)

bp = Blueprint("observability", __name__)

# Requests take tens of microseconds; the default buckets start at 5 ms.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Any other method is one label value, so junk methods cannot grow the label set.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# By the contract, these statuses mean the storage refused: unreachable, or full.
_STORAGE_ERRORS = {503: "unavailable", 507: "key_limit"}
_UNMATCHED = "unmatched"  # 404s and 405s have no url rule; one label keeps raw paths out
_STARTED = "ringsum.started"  # environ key: perf_counter() when the app got the request
_HEALTHY = json.dumps({"status": "ok", "version": __version__}).encode()


class StorageCollector(Collector):
    """Keys, entries, evictions and sweep time, asked of the storage at scrape time."""

    def __init__(self, storage: Storage, errors: Counter) -> None:
        self._storage = storage
        self._errors = errors

    def describe(self) -> list[Metric]:
        return []  # never touch the storage at registration time

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self._storage.stats()
        except StorageError as error:
            log.warning("storage stats unavailable for /metrics: %s", error)
            self._errors.labels("unavailable").inc()
            return
        yield GaugeMetricFamily("ringsum_keys", "Live keys held.", value=stats.keys)
        yield GaugeMetricFamily("ringsum_entries", "Window entries held, all keys together.", value=stats.entries)
        if stats.evictions is not None:
            yield CounterMetricFamily(
                "ringsum_evictions", "Window entries aged out since start.", value=stats.evictions
            )
        if stats.idempotency_keys is not None:
            yield GaugeMetricFamily(
                "ringsum_idempotency_keys", "Idempotency keys remembered.", value=stats.idempotency_keys
            )
        if stats.sweep_seconds is not None:
            yield GaugeMetricFamily(
                "ringsum_sweep_duration_seconds", "Duration of the last background sweep.", value=stats.sweep_seconds
            )


class BuildInfoCollector(Collector):
    """``ringsum_build_info{version="0.3.0"} 1``: which ringsum answers, as Prometheus's
    own exporters say it (a constant 1 whose labels are the information)."""

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("ringsum_build_info", "The ringsum version serving; always 1.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info


class Metrics:
    """One app's registry and the instruments its request hooks feed."""

    def __init__(self, storage: Storage) -> None:
        # The *_created series would double the exposition and only tell when the
        # process started. (A process-wide switch of prometheus_client.)
        disable_created_metrics()
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ringsum_http_requests",
            "HTTP requests answered, by route (the URL rule), method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ringsum_http_request_duration_seconds",
            "Time to answer an HTTP request, by route (the URL rule), method and status.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.values_recorded = Counter(
            "ringsum_values_recorded", "Values recorded, single posts and batch events.", registry=self.registry
        )
        self.idempotent_replays = Counter(
            "ringsum_idempotent_replays",
            "Writes answered again from their Idempotency-Key's marker, recording nothing.",
            registry=self.registry,
        )
        self.idempotency_conflicts = Counter(
            "ringsum_idempotency_conflicts",
            "Writes refused (422) because their Idempotency-Key was first used for another request.",
            registry=self.registry,
        )
        self.storage_errors = Counter(
            "ringsum_storage_errors",
            "Storage refusals: unavailable (503) or key_limit (507).",
            ["error"],
            registry=self.registry,
        )
        self.edge_refusals = Counter(
            "ringsum_edge_refusals",
            "Requests refused, or connections dropped, by the edge before the app saw them, by reason.",
            ["reason"],
            registry=self.registry,
        )
        for reason in REFUSAL_REASONS:  # every reason reads 0 from the start: alerts never see "no data"
            self.edge_refusals.labels(reason)
        self.registry.register(StorageCollector(storage, self.storage_errors))
        self.registry.register(BuildInfoCollector())
        self._children: dict[tuple[str, str, int], tuple[Callable[[], None], Callable[[float], None]]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        children = self._children.get((route, method, status))
        if children is None:
            children = self._children[route, method, status] = self._bind(route, method, status)
        count, latency = children
        count()
        latency(seconds)

    def _bind(self, route: str, method: str, status: int) -> tuple[Callable[[], None], Callable[[float], None]]:
        """The label children of one (route, method, status), looked up once; a new
        status that means a storage refusal is counted here too, then per request."""
        labels = (route, method if method in _METHODS else "other", str(status))
        count = self.requests.labels(*labels).inc
        error = _STORAGE_ERRORS.get(status)
        if error is not None:
            count_error = self.storage_errors.labels(error).inc
            count_request = count

            def count() -> None:
                count_request()
                count_error()

        return count, self.latency.labels(*labels).observe


def refusal_counter(app: Flask) -> Callable[[str], None]:
    """What the edge calls with the reason of each request it refuses."""
    refusals = metrics(app).edge_refusals
    return lambda reason: refusals.labels(reason).inc()


def count_recorded(values: int) -> None:
    metrics().values_recorded.inc(values)


def count_replay() -> None:
    metrics().idempotent_replays.inc()


def count_idempotency_conflict() -> None:
    metrics().idempotency_conflicts.inc()


def init_app(app: Flask) -> None:
    """Time every request from the moment the app gets it to the moment its response is ready."""
    observed = state.state(app).metrics = Metrics(storage(app))
    inner = app.wsgi_app

    def timed_wsgi_app(environ: dict, start_response: Callable) -> Any:
        environ[_STARTED] = perf_counter()
        return inner(environ, start_response)

    app.wsgi_app = timed_wsgi_app  # the documented way to add WSGI middleware

    @app.after_request
    def observe(response: Response) -> Response:
        # One proxy lookup, then plain attributes: this runs on every request.
        current = request._get_current_object()
        rule = current.url_rule
        seconds = perf_counter() - current.environ.get(_STARTED, 0.0)
        observed.observe(rule.rule if rule is not None else _UNMATCHED, current.method, response.status_code, seconds)
        return response

    app.register_blueprint(bp)


@bp.get("/healthz")
def healthz() -> Response:
    return Response(_HEALTHY, mimetype="application/json")


@bp.get("/readyz")
def readyz() -> Response:
    """Ready when the storage answers; StorageUnavailable becomes a 503 with Retry-After."""
    storage().ping()
    return Response(b'{"status": "ready"}', mimetype="application/json")


@bp.get("/metrics")
def prometheus() -> Response:
    return Response(generate_latest(metrics().registry), content_type=CONTENT_TYPE_LATEST)
