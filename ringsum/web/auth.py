"""The optional bearer token (RINGSUM_API_TOKEN) on the data and metrics routes.

Health, readiness, the API document and the dashboard page stay open: probes and
browsers must reach them without a secret, and they reveal no data.
"""

from __future__ import annotations

import hmac

from flask import Flask, request

from .problems import Problem
from .state import settings

# Exactly the paths the token guards: /metric, /metric/..., /metrics.
_GUARDED_PREFIX = "/metric/"
_GUARDED_PATHS = frozenset({"/metric", "/metrics"})


def is_guarded(path: str) -> bool:
    return path in _GUARDED_PATHS or path.startswith(_GUARDED_PREFIX)


def init_app(app: Flask) -> None:
    """Install the check only when a token is set, so an open service pays nothing."""
    token = settings(app).api_token
    if not token:
        return
    expected = token.encode("utf-8")

    @app.before_request
    def require_token() -> None:
        if is_guarded(request.path):
            check_bearer(request.headers.get("Authorization"), expected)


def check_bearer(header: str | None, expected: bytes) -> None:
    """Raise a 401 Problem unless ``header`` is ``Bearer <expected>``."""
    if not header:
        raise Problem(
            401,
            "this endpoint needs the API token: send the header Authorization: Bearer <RINGSUM_API_TOKEN>",
            {"WWW-Authenticate": 'Bearer realm="ringsum"'},
        )
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(_bytes_sent(credentials.strip()), expected):
        raise Problem(
            401,
            "the API token is wrong: send the header Authorization: Bearer <RINGSUM_API_TOKEN>",
            {"WWW-Authenticate": 'Bearer realm="ringsum", error="invalid_token"'},
        )


def _bytes_sent(text: str) -> bytes:
    """WSGI hands header values over decoded as latin-1: encoding back gives the bytes
    the client sent, so a UTF-8 token compares equal to RINGSUM_API_TOKEN."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:  # cannot have come off the wire; never equal to a token
        return b""
