"""The one place that turns errors into RFC 9457 ``application/problem+json`` answers."""

from __future__ import annotations

import logging
from http import HTTPStatus

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from ..http.wire import PROBLEM_MIMETYPE, problem_json, title
from ..inputs.errors import InputError, Malformed, Unprocessable
from ..storage import (
    IdempotencyKeyReused,
    KeyLimitReached,
    MarkerLimitReached,
    NotDurable,
    StorageIncompatible,
    StorageUnavailable,
    SumOutOfRange,
)
from .observability import count_storage_error

__all__ = ["PROBLEM_MIMETYPE", "Problem", "problem_json", "title"]

log = logging.getLogger(__name__)


# What to tell the user for the errors Werkzeug raises on its own.
_DETAILS = {
    404: "no such endpoint: see GET /openapi.json for the ones there are",
    405: "this endpoint does not take {method}: the Allow header lists the methods it takes",
    413: "the body is larger than RINGSUM_MAX_BODY ({limit} bytes): send less, or split a batch",
    500: "the server failed to answer this request; it has been logged",
}


class Problem(Exception):
    """An error meant for the client: its status, and a detail that says what to change."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def problem_response(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return Response(problem_json(status, detail), status, headers=headers, mimetype=PROBLEM_MIMETYPE)


def _from_problem(error: Problem) -> Response:
    return problem_response(error.status, error.detail, error.headers)


# The client's mistakes the inputs raise (no Flask there), by the status each one is.
_INPUT_STATUS: dict[type[InputError], int] = {Malformed: 400, Unprocessable: 422}


def _from_input_error(error: InputError) -> Response:
    return problem_response(_INPUT_STATUS[type(error)], error.detail)


def _from_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    template = _DETAILS.get(status)
    if template:
        detail = template.format(method=request.method, limit=request.max_content_length)
    else:
        detail = error.description or HTTPStatus(status).description
    headers = {name: value for name, value in error.get_headers() if name.lower() != "content-type"}
    return problem_response(status, detail, headers)


def _from_key_limit(error: KeyLimitReached) -> Response:
    count_storage_error(error)
    return problem_response(507, f"{error}; wait for keys to age out, delete some, or raise the limit")


def _from_marker_limit(error: MarkerLimitReached) -> Response:
    count_storage_error(error)
    return problem_response(
        507,
        f"{error}, each for the window: retry later, send this write without the Idempotency-Key header, "
        "or raise the limit; nothing was recorded",
    )


def _from_reused_idempotency_key(error: IdempotencyKeyReused) -> Response:
    return problem_response(
        422,
        "this Idempotency-Key was first used for another request (another path or body): "
        "a retry must send the very same request; use a new key for a new write. Nothing was recorded",
    )


def _from_sum_out_of_range(error: SumOutOfRange) -> Response:
    return problem_response(422, str(error))


def _from_incompatible(error: StorageIncompatible) -> Response:
    count_storage_error(error)
    return problem_response(503, str(error), {"Retry-After": "60"})


def _from_unavailable(error: StorageUnavailable) -> Response:
    count_storage_error(error)
    return problem_response(503, f"storage is unreachable ({error}); retry shortly", {"Retry-After": "1"})


def _from_not_durable(error: NotDurable) -> Response:
    return problem_response(503, f"{error}; retry shortly", {"Retry-After": "1"})


def _from_unexpected(error: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return problem_response(500, _DETAILS[500])


def register_problem_handlers(app: Flask) -> None:
    app.register_error_handler(Problem, _from_problem)
    app.register_error_handler(InputError, _from_input_error)
    app.register_error_handler(HTTPException, _from_http_exception)
    app.register_error_handler(KeyLimitReached, _from_key_limit)
    app.register_error_handler(MarkerLimitReached, _from_marker_limit)
    app.register_error_handler(IdempotencyKeyReused, _from_reused_idempotency_key)
    app.register_error_handler(StorageUnavailable, _from_unavailable)
    app.register_error_handler(StorageIncompatible, _from_incompatible)
    app.register_error_handler(NotDurable, _from_not_durable)
    app.register_error_handler(SumOutOfRange, _from_sum_out_of_range)
    app.register_error_handler(Exception, _from_unexpected)
