"""What the edge and the app agree on, with no Flask: the problem document (RFC 9457)
every error is written as, and the environ key of a body the edge read whole.

The edge answers some requests before Flask runs (framing errors, timeouts), so the
document's shape lives here, below both."""

from __future__ import annotations

import json
from http import HTTPStatus

PROBLEM_MIMETYPE = "application/problem+json"

# environ key under which ringsum's edge hands over a body it has read in full, within
# RINGSUM_MAX_BODY: the app takes those bytes as they are instead of streaming them again
# through Werkzeug's wrappers (a third of the cost of a single post's view, measured).
WHOLE_BODY = "ringsum.whole_body"

# Why the edge refused a request or dropped a connection, before the app saw it: the
# label of ringsum_edge_refusals_total (a fixed set, so a client cannot grow it).
REFUSAL_REASONS = (
    "malformed",  # not HTTP/1.1 as RFC 9112 frames it
    "ambiguous_framing",  # Content-Length with Transfer-Encoding
    "transfer_coding",  # a coding other than chunked
    "duplicate_header",  # Content-Length, Host, Authorization, Idempotency-Key or Transfer-Encoding twice
    "missing_host",
    "version",  # not HTTP/1.0 or 1.1
    "connect",  # CONNECT: nothing is tunnelled
    "url_too_long",
    "headers_too_large",
    "body_too_large",
    "chunks",  # too many chunks or chunk-framing bytes
    "read_timeout",  # RINGSUM_READ_TIMEOUT passed before the request was whole
    "send_timeout",  # the client did not read its answers for RINGSUM_IDLE_TIMEOUT
    "overloaded",  # every connection together holds too many unfinished request bytes
    "connection_limit",  # a slow request made way for a new connection
    "restarting",  # a request still arriving when the server stopped or reloaded
)

# RFC 9110 names, where Python's table still has the older ones.
_TITLES = {413: "Content Too Large", 414: "URI Too Long", 422: "Unprocessable Content"}


def title(status: int) -> str:
    """The status's name as RFC 9110 spells it: a problem's title, a status line's reason."""
    return _TITLES.get(status) or HTTPStatus(status).phrase


def problem_json(status: int, detail: str) -> bytes:
    """The problem document itself."""
    return json.dumps({"type": "about:blank", "title": title(status), "status": status, "detail": detail}).encode()
