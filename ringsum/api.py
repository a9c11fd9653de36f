"""HTTP routes: parse, call storage, shape the answer. Nothing else lives here."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from .inputs import parse_key, parse_value_body
from .storage import Storage

bp = Blueprint("api", __name__)

JSON = "application/json"
_EMPTY_OBJECT = b"{}"


def storage() -> Storage:
    return current_app.extensions["ringsum.storage"]


def _json(body: bytes, status: int = 200) -> Response:
    # Bodies are tiny and fixed in shape: formatting them here is both exact (the
    # challenge's clients compare whole objects) and cheaper than jsonify.
    return Response(body, status, mimetype=JSON)


@bp.post("/metric/<key>")
@bp.post("/metric/<key>/")
def record(key: str) -> Response:
    key = parse_key(key)
    value = parse_value_body(request.get_data(cache=False))
    storage().record(key, value)
    return _json(_EMPTY_OBJECT)


@bp.get("/metric/<key>/sum")
def total(key: str) -> Response:
    key = parse_key(key)
    return _json(b'{"value": %d}' % storage().total(key))
