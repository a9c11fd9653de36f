"""Health, readiness and Prometheus metrics.

Each app has its own registry (test apps never collide). Per request only a dict
lookup, a counter increment and a histogram observation are paid; the label
children are cached per (route, method, status). The latency histogram has no status
label, as Prometheus's own HTTP instrumentation does: each label value multiplies its
15 series, and the status is the counter's (``ringsum_http_requests_total``). What the storage holds (keys,
entries, evictions, sweep time, the exported sums) is read once per scrape, never
per request. Under ``--workers N`` the instruments are shared by the workers
(``ringsum.web.shared_metrics``), so a scrape sums them whichever worker answers; the
``process_*`` figures are those of the whole server (``ringsum.web.process_metrics``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from time import perf_counter
from typing import Any

from flask import Blueprint, Flask, Response, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..config import Settings
from ..http.wire import REFUSAL_REASONS
from ..storage import (
    KeyLimitReached,
    MarkerLimitReached,
    Storage,
    StorageError,
    StorageIncompatible,
    StorageUnavailable,
)
from ..version import __version__
from . import shared_metrics, state
from .export import WindowSumExport
from .process_metrics import ProcessCollector, Server
from .state import metrics, storage

log = logging.getLogger(__name__)

bp = Blueprint("observability", __name__)

# Requests take tens of microseconds; the default buckets start at 5 ms.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Any other method is one label value, so junk methods cannot grow the label set.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# The label of ringsum_storage_errors_total: the storage's refusal, by its exception
# (the most specific one listed in its class's MRO), never by the HTTP status it got.
STORAGE_ERROR_CAUSES: dict[type[StorageError], str] = {
    StorageIncompatible: "incompatible",  # 503: data in a layout a newer ringsum wrote
    StorageUnavailable: "unavailable",  # 503: unreachable, timed out, or the log cannot be written
    KeyLimitReached: "key_limit",  # 507: RINGSUM_MAX_KEYS, or Redis maxmemory
    MarkerLimitReached: "marker_limit",  # 507: RINGSUM_MAX_IDEMPOTENCY_KEYS
}
_UNMATCHED = "unmatched"  # 404s and 405s have no url rule; one label keeps raw paths out
_STARTED = "ringsum.started"  # environ key: perf_counter() when the app got the request
_HEALTHY = json.dumps({"status": "ok", "version": __version__}).encode()


def storage_error_cause(error: StorageError) -> str | None:
    """The label an error is counted under, or None for those that are not counted
    here (a reused Idempotency-Key, a sum out of range: the client's to fix)."""
    for cls in type(error).__mro__:
        cause = STORAGE_ERROR_CAUSES.get(cls)
        if cause is not None:
            return cause
    return None


class StorageCollector(Collector):
    """What the storage holds, asked of it at scrape time by the worker that answers
    (every worker shares the storage): keys, entries, evictions, sweep time, readiness,
    and the exported window sums; and the limits the storage was given."""

    def __init__(self, storage: Storage, settings: Settings, errors: Counter, *, shared: bool) -> None:
        self._storage = storage
        self._errors = errors
        self._shared = shared  # evictions are then a shared counter, not read here
        # RINGSUM_MAX_KEYS binds the storage that lives in the process (memory); Redis is
        # bounded by its own maxmemory, so no limit is shown there for an alert to compare.
        self._max_keys = settings.max_keys if type(storage).single_process else None
        self._journal = settings.fsync.value if type(storage).uses_data_dir and settings.data_dir else "off"
        self._backend = settings.storage_uri.partition("://")[0]
        self._export = WindowSumExport(settings.export, settings.export_max_keys) if settings.export else None

    def describe(self) -> list[Metric]:
        return []  # never touch the storage at registration time

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "ringsum_storage_info",
            "Always 1: the storage backend (URI scheme) and the journal's fsync mode (off: nothing kept on disk).",
            labels=["backend", "journal"],
        )
        info.add_metric([self._backend, self._journal], 1)
        yield info
        if self._max_keys is not None:
            yield GaugeMetricFamily(
                "ringsum_max_keys", "RINGSUM_MAX_KEYS: live keys memory storage holds at most.", value=self._max_keys
            )
        try:
            stats = self._storage.stats()
        except StorageError as error:
            log.warning("storage stats unavailable for /metrics: %s", error)
            self._count(error)
            yield _ready(False)
            return
        yield _ready(True)
        yield GaugeMetricFamily("ringsum_keys", "Live keys held.", value=stats.keys)
        yield GaugeMetricFamily("ringsum_entries", "Window entries held, all keys together.", value=stats.entries)
        if stats.evictions is not None and not self._shared:
            yield CounterMetricFamily(
                "ringsum_evictions", "Window entries aged out since start.", value=stats.evictions
            )
        if stats.idempotency_keys is not None:
            yield GaugeMetricFamily(
                "ringsum_idempotency_keys", "Idempotency keys remembered.", value=stats.idempotency_keys
            )
        if stats.durable is not None:
            yield GaugeMetricFamily(
                "ringsum_data_dir_durable",
                "1 while writes are trusted to the data dir; 0 while they are refused (503): a failed fsync, "
                "a data dir deleted or replaced, a log that cannot be written.",
                value=int(stats.durable),
            )
        if stats.damaged_files is not None:
            yield GaugeMetricFamily(
                "ringsum_data_dir_damaged_files",
                "Damaged files found at a start and kept aside in the data dir (*.damaged), until removed by hand.",
                value=stats.damaged_files,
            )
        if stats.sweep_seconds is not None:
            yield GaugeMetricFamily(
                "ringsum_sweep_duration_seconds", "Duration of the last background sweep.", value=stats.sweep_seconds
            )
        if self._export is not None:
            try:
                yield from list(self._export.collect(self._storage))
            except StorageError as error:
                log.warning("exported sums unavailable for /metrics: %s", error)
                self._count(error)

    def _count(self, error: StorageError) -> None:
        cause = storage_error_cause(error)
        if cause is not None:
            self._errors.labels(cause).inc()


def _ready(answered: bool) -> Metric:
    return GaugeMetricFamily(
        "ringsum_ready",
        "1 when the storage answered this scrape (as GET /readyz asks it), else 0.",
        value=int(answered),
    )


class BuildInfoCollector(Collector):
    """``ringsum_build_info{version="0.3.0"} 1``: which ringsum answers, as Prometheus's
    own exporters say it (a constant 1 whose labels are the information)."""

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("ringsum_build_info", "The ringsum version serving; always 1.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info


class Metrics:
    """One app's instruments, fed by its request hooks, and the registry a scrape reads."""

    def __init__(self, storage: Storage, settings: Settings) -> None:
        # The *_created series would double the exposition and only tell when the
        # process started. (A process-wide switch of prometheus_client.)
        disable_created_metrics()
        shared = shared_metrics.choose_values()  # before any instrument exists: see ringsum.web.shared_metrics
        self.registry = CollectorRegistry()  # the instruments'; what a scrape reads is scrape_registry
        self.requests = Counter(
            "ringsum_http_requests",
            "HTTP requests answered, by route (the URL rule), method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ringsum_http_request_duration_seconds",
            "Time to answer an HTTP request, by route (the URL rule) and method.",
            ["route", "method"],
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
            "Storage refusals by cause: unavailable, incompatible (503), key_limit, marker_limit (507).",
            ["error"],
            registry=self.registry,
        )
        for cause in STORAGE_ERROR_CAUSES.values():  # 0 from the start: alerts never see "no data"
            self.storage_errors.labels(cause)
        self.edge_refusals = Counter(
            "ringsum_edge_refusals",
            "Requests refused, or connections dropped, by the edge before the app saw them, by reason.",
            ["reason"],
            registry=self.registry,
        )
        for reason in REFUSAL_REASONS:  # every reason reads 0 from the start: alerts never see "no data"
            self.edge_refusals.labels(reason)
        workers = Gauge(
            "ringsum_workers",
            "Worker processes serving (each live worker adds 1).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        workers.set(1)
        self._children: dict[tuple[str, str, int], tuple[Callable[[], None], Callable[[float], None]]] = {}
        collector = StorageCollector(storage, settings, self.storage_errors, shared=shared is not None)
        if shared is None:
            self.registry.register(collector)
            self.scrape_registry = self.registry
            self.sync_evictions: Callable[[], None] | None = None
        else:
            self.scrape_registry = CollectorRegistry()
            self.scrape_registry.register(collector)
            self.scrape_registry.register(shared_metrics.SharedCollector(shared))
            self.sync_evictions = _EvictionsMirror(storage, self.registry).sync
        self.scrape_registry.register(BuildInfoCollector())  # read in the worker that answers
        self.processes = ProcessCollector(shared=shared is not None)
        self.scrape_registry.register(self.processes)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        children = self._children.get((route, method, status))
        if children is None:
            children = self._children[route, method, status] = self._bind(route, method, status)
        count, latency = children
        count()
        latency(seconds)

    def _bind(self, route: str, method: str, status: int) -> tuple[Callable[[], None], Callable[[float], None]]:
        """The label children of one (route, method, status), looked up once."""
        method = method if method in _METHODS else "other"
        return self.requests.labels(route, method, str(status)).inc, self.latency.labels(route, method).observe


class _EvictionsMirror:
    """Shared workers: the entries this worker's requests aged out (the storage counts
    them per process) as a shared counter, so ringsum_evictions_total is the sum over
    workers. On Redis only requests age entries out, so a sync after each is exact."""

    def __init__(self, storage: Storage, registry: CollectorRegistry) -> None:
        self._storage = storage
        self._seen = 0
        self._lock = threading.Lock()  # --threads N: two requests may sync at once
        self._counter = Counter("ringsum_evictions", "Window entries aged out since start.", registry=registry)

    def sync(self) -> None:
        current = getattr(self._storage, "evictions", 0)  # what both backends count for /metrics
        if current == self._seen:
            return
        with self._lock:
            delta = current - self._seen
            if delta <= 0:  # another thread synced a later count meanwhile
                return
            self._seen = current
        self._counter.inc(delta)


def refusal_counter(app: Flask) -> Callable[[str], None]:
    """What the edge calls with the reason of each request it refuses."""
    refusals = metrics(app).edge_refusals
    return lambda reason: refusals.labels(reason).inc()


def serving_under(app: Flask, server: Server) -> None:
    """This app serves in a worker of ringsum's supervisor: its ``process_*`` figures
    are then those of every process of the server."""
    metrics(app).processes.server = server


def count_recorded(values: int) -> None:
    metrics().values_recorded.inc(values)


def count_replay() -> None:
    metrics().idempotent_replays.inc()


def count_idempotency_conflict() -> None:
    metrics().idempotency_conflicts.inc()


def count_storage_error(error: StorageError) -> None:
    """Count a storage refusal under its cause (the problem handlers call this)."""
    cause = storage_error_cause(error)
    if cause is not None:
        metrics().storage_errors.labels(cause).inc()


def init_app(app: Flask) -> None:
    """Time every request from the moment the app gets it to the moment its response is ready."""
    observed = state.state(app).metrics = Metrics(storage(app), state.settings(app))
    sync_evictions = observed.sync_evictions
    inner = app.wsgi_app

    def timed_wsgi_app(environ: dict, start_response: Callable) -> Any:
        environ[_STARTED] = perf_counter()
        return inner(environ, start_response)

    app.wsgi_app = timed_wsgi_app  # type: ignore[method-assign]  # the documented way to add WSGI middleware

    @app.after_request
    def observe(response: Response) -> Response:
        # One proxy lookup, then plain attributes: this runs on every request.
        current = request._get_current_object()  # type: ignore[attr-defined]  # a LocalProxy method
        rule = current.url_rule
        seconds = perf_counter() - current.environ.get(_STARTED, 0.0)
        observed.observe(rule.rule if rule is not None else _UNMATCHED, current.method, response.status_code, seconds)
        if sync_evictions is not None:
            sync_evictions()
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
    observed = metrics()
    if observed.sync_evictions is not None:
        observed.sync_evictions()
    return Response(generate_latest(observed.scrape_registry), content_type=CONTENT_TYPE_LATEST)
