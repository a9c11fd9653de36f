"""The ``Idempotency-Key`` request header: reading it, and fingerprinting the request.

A client that retries a POST with the same key gets the first answer again and
counts nothing twice (draft-ietf-httpapi-idempotency-key-header, Stripe's
``Idempotency-Key``). The storage keeps the marker atomically with the write; this
module only turns the request into the marker's id and fingerprint.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from hashlib import sha256
from typing import Any

from .errors import Malformed

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"  # "true" on an answer given again, as Stripe does
MAX_LENGTH = 255
_ENVIRON_NAME = "HTTP_IDEMPOTENCY_KEY"  # the WSGI name: a dict lookup, cheaper than request.headers
# Visible ASCII but the comma: a header sent twice reaches the app as the two values
# joined by a comma (", " or ","), and which one was meant cannot be told.
_KEY_CHARACTERS = re.compile(f"[!-+\\--~]{{1,{MAX_LENGTH}}}")


def parse_idempotency_key(environ: Mapping[str, Any]) -> str | None:
    """The header's value, taken as it is (the draft's quoted form ``"abc"`` included,
    quotes and all), or None without the header. Anything but 1-255 visible ASCII
    characters other than a comma is a 400, a header sent twice included."""
    raw = environ.get(_ENVIRON_NAME)
    if raw is None:
        return None
    if _KEY_CHARACTERS.fullmatch(raw) is None:
        raise Malformed(
            f"the {HEADER} header must be 1-{MAX_LENGTH} visible ASCII characters, no spaces or commas "
            "(a UUID is a good choice), and sent once"
        )
    return raw


def fingerprint(method: str, path: str, body: bytes) -> bytes:
    """What tells a retry (same method, path and body bytes) from another request
    sent with the same key: SHA-256, so a marker holds 32 bytes whatever the body."""
    return sha256(b"%s\0%s\0%s" % (method.encode(), path.encode(), body)).digest()
