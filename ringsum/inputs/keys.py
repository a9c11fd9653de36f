"""What a metric key is made of: the one rule for keys in paths and batches, for the
prefixes that list them, and for the prefixes of RINGSUM_EXPORT (so the settings, read
before Flask is loaded, use it too: a bad key is a plain ``Malformed``, no Flask)."""

from __future__ import annotations

import re

from .errors import Malformed

KEY_CHARACTER = "[A-Za-z0-9_.:-]"  # the one definition of what a key is made of
_KEY = re.compile(KEY_CHARACTER + "{1,200}")
_PREFIX = re.compile(KEY_CHARACTER + "{0,200}")


def is_prefix(text: str) -> bool:
    return _PREFIX.fullmatch(text) is not None


def is_key(text: str) -> bool:
    return _KEY.fullmatch(text) is not None


def parse_key(key: str) -> str:
    if not is_key(key):
        raise Malformed("key must be 1-200 characters of A-Z a-z 0-9 _ . : -")
    return key


def parse_prefix_param(raw: str | None) -> str:
    """``?prefix=``: the start of the keys to list; absent or empty lists every key."""
    if raw is None or _PREFIX.fullmatch(raw) is not None:
        return raw or ""
    raise Malformed("prefix must be 0-200 characters of A-Z a-z 0-9 _ . : - (the start of the keys to list)")


def parse_after_param(raw: str | None) -> str:
    """``?after=``: the listing cursor, the ``next`` of the page before, so it is a key."""
    if raw is None or _KEY.fullmatch(raw) is not None:
        return raw or ""
    raise Malformed("after must be 1-200 characters of A-Z a-z 0-9 _ . : - (pass back the previous page's next)")
