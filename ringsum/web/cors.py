"""Cross-origin requests from browsers (CORS) for the origins RINGSUM_CORS_ORIGINS names.

Off by default: a page served from another origin cannot read ringsum's answers (the
browser hides them) nor send it a JSON body or a token. Origins named in the setting
may: an answer to a request whose ``Origin`` is one of them carries
``Access-Control-Allow-Origin`` with that origin, and a preflight (``OPTIONS`` with
``Access-Control-Request-Method``) is answered 204 with the methods the route takes and
the request headers ringsum reads. Any other origin gets no CORS header at all, so the
browser keeps refusing it. The token is a header the page's script sets, not a cookie,
so no ``Access-Control-Allow-Credentials`` is needed (nor given).

The preflight is answered before the token check: browsers send it without the
``Authorization`` header, by design.
"""

from __future__ import annotations

from flask import Flask, Response, request

from .state import settings

ALLOWED_HEADERS = "Authorization, Content-Type, Idempotency-Key"
# Besides the headers every script may read: a replay's marker, when to retry, why a token failed.
EXPOSED_HEADERS = "Idempotent-Replayed, Retry-After, WWW-Authenticate"
PREFLIGHT_MAX_AGE_S = "600"  # browsers cache a preflight this long (Chromium caps it at 7200)
_NOT_PREFLIGHTED = frozenset({"HEAD", "OPTIONS"})


def init_app(app: Flask) -> None:
    """Install the hooks only when origins are named, so a service without CORS pays
    nothing. Must run before the token's check is installed (preflights carry no token)."""
    origins = frozenset(settings(app).cors_origins)
    if not origins:
        return

    @app.before_request
    def answer_preflight() -> Response | None:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        origin = request.headers.get("Origin")
        if origin not in origins or request.url_rule is None:  # Flask's own OPTIONS answer, or a 404 problem
            return None
        # Every method of the path, whichever of its rules matched (POST and DELETE
        # /metric/<key> are two).
        methods = set(app.create_url_adapter(request).allowed_methods()) - _NOT_PREFLIGHTED  # type: ignore[union-attr]
        response = Response(status=204)
        del response.headers["Content-Type"]
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = ", ".join(sorted(methods))
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE_S
        response.vary.update(("Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"))
        return response

    @app.after_request
    def allow_origin(response: Response) -> Response:
        response.vary.add("Origin")  # a cache must not give one origin's answer to another
        origin = request.headers.get("Origin")
        if origin in origins and "Access-Control-Allow-Origin" not in response.headers:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        return response
