"""HTTP routes: parse, call storage, shape the answer. Nothing else lives here."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from flask import Blueprint, Response, request

from ..inputs.idempotency import REPLAYED_HEADER, fingerprint, parse_idempotency_key
from ..inputs.keys import parse_after_param, parse_key, parse_prefix_param
from ..inputs.params import parse_limit_param, parse_step_param, parse_window_param, parse_with_param
from ..inputs.values import parse_batch_body, parse_value_body
from ..storage import IdempotencyKeyReused, Marker, WindowStats
from .observability import count_idempotency_conflict, count_recorded, count_replay
from .state import settings, storage

bp = Blueprint("api", __name__)

JSON = "application/json"
_EMPTY_OBJECT = b"{}"


def _query_param(name: str) -> str | None:
    """``request.args.get(name)``, without parsing the usual empty query string: this
    is on the hot path of GET .../sum, and proxies and parsing cost microseconds."""
    current = request._get_current_object()  # type: ignore[attr-defined]  # a LocalProxy method
    return current.args.get(name) if current.environ.get("QUERY_STRING") else None


def _json(body: bytes, status: int = 200) -> Response:
    # Bodies are tiny and fixed in shape: formatting them here is both exact (the
    # challenge's clients compare whole objects) and cheaper than jsonify.
    return Response(body, status, mimetype=JSON)


@bp.post("/metric/<key>")
@bp.post("/metric/<key>/")
def record(key: str) -> Response:
    key = parse_key(key)
    marker_id = parse_idempotency_key(request.environ)
    body = request.get_data(cache=False)
    value = parse_value_body(body)
    if marker_id is not None:
        return _record_once(marker_id, body, _EMPTY_OBJECT, 1, lambda marker: storage().record(key, value, marker))
    storage().record(key, value)
    count_recorded(1)
    return _json(_EMPTY_OBJECT)


@bp.get("/metric/<key>/sum")
def total(key: str) -> Response:
    key = parse_key(key)
    window = _query_param("window")
    if window is None:
        return _json(b'{"value": %d}' % storage().total(key))
    window_us = parse_window_param(window, settings().window_us, settings().slot_us)
    return _json(b'{"value": %d}' % storage().total(key, window_us))


@bp.get("/metric/<key>/stats")
def window_stats(key: str) -> Response:
    """The sum, the count of values and their mean, over the window or a shorter one."""
    key = parse_key(key)
    window = _query_param("window")
    window_us = None if window is None else parse_window_param(window, settings().window_us, settings().slot_us)
    return _json(stats_body(storage().window_stats(key, window_us)))


def stats_body(found: WindowStats) -> bytes:
    """``{"sum": s, "count": n, "mean": m}``. The mean is ``s / n`` rounded once, to the
    nearest double, written as the shortest decimal that reads back as it (Python's
    int / int is correctly rounded, however large ``s``); null when there is no value,
    and count and mean are null when the count is not known (data from before counts)."""
    if found.count is None:
        return b'{"sum": %d, "count": null, "mean": null}' % found.sum
    mean = repr(found.sum / found.count).encode() if found.count else b"null"
    return b'{"sum": %d, "count": %d, "mean": %s}' % (found.sum, found.count, mean)


@bp.post("/metric")
def record_batch() -> Response:
    marker_id = parse_idempotency_key(request.environ)
    body = request.get_data(cache=False)
    events = parse_batch_body(body)
    answer = b'{"recorded": %d}' % len(events)
    if not events:  # an empty batch needs no storage, not even a reachable one, nor a marker
        return _json(answer)
    if marker_id is not None:
        return _record_once(marker_id, body, answer, len(events), lambda marker: storage().record_many(events, marker))
    storage().record_many(events)
    count_recorded(len(events))
    return _json(answer)


def _record_once(
    marker_id: str, body: bytes, answer: bytes, values: int, write: Callable[[Marker], Marker | None]
) -> Response:
    """Run ``write`` guarded by a marker: the first request with this id records and
    gets ``answer``; a retry of it records nothing and gets the first answer again."""
    marker = Marker(marker_id, fingerprint(request.method, request.path, body), 200, answer)
    try:
        first = write(marker)
    except IdempotencyKeyReused:
        count_idempotency_conflict()
        raise
    if first is None:
        count_recorded(values)
        return _json(answer)
    count_replay()
    return Response(first.body, first.status, mimetype=JSON, headers={REPLAYED_HEADER: "true"})


@bp.get("/metric")
def list_metrics() -> Response:
    prefix = parse_prefix_param(request.args.get("prefix"))
    limit = parse_limit_param(request.args.get("limit"))
    page = storage().keys(prefix, limit, parse_after_param(request.args.get("after")))
    answer: dict[str, object] = {"metrics": [{"key": key, "value": value} for key, value in page.metrics]}
    if page.next is not None:  # absent, not null, on the last page
        answer["next"] = page.next
    return _json(json.dumps(answer).encode())


@bp.delete("/metric/<key>")
@bp.delete("/metric/<key>/")
def delete(key: str) -> Response:
    storage().delete(parse_key(key))
    response = Response(status=204)
    del response.headers["Content-Type"]  # no content, so no content type
    return response


@bp.get("/metric/<key>/series")
def series(key: str) -> Response:
    key = parse_key(key)
    step_us = parse_step_param(request.args.get("step"), settings().window_us, settings().slot_us)
    with_count = parse_with_param(request.args.get("with"))
    found = storage().series(key, step_us, with_count)
    if found.counts is not None:  # [start, sum, count]: null where the count is not known
        points = ", ".join(
            f"[{_seconds(found.start_us + index * step_us)}, {total}, {'null' if count is None else count}]"
            for index, (total, count) in enumerate(zip(found.sums, found.counts, strict=True))
        )
    else:
        points = ", ".join(
            f"[{_seconds(found.start_us + index * step_us)}, {total}]" for index, total in enumerate(found.sums)
        )
    return _json(f'{{"step": {_seconds(step_us)}, "points": [{points}]}}'.encode())


def _seconds(micros: int) -> str:
    """Microseconds as exact decimal seconds: an integer when whole, like 60 or 0.5."""
    whole, fraction = divmod(micros, 1_000_000)
    return str(whole) if not fraction else f"{whole}.{fraction:06d}".rstrip("0")


_OPENAPI = (Path(__file__).parent / "openapi.json").read_bytes()


@bp.get("/openapi.json")
def openapi() -> Response:
    return _json(_OPENAPI)
