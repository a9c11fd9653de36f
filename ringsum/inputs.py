"""Parsing of keys, values, bodies and query parameters into clear 4xx problems."""

from __future__ import annotations

import json
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge

from .problems import Problem, bad_request, unprocessable
from .units import format_duration, parse_duration_us

MAX_VALUE = 2**53 - 1
# |x| < 2**53 - 0.5 is exactly "x rounds to an integer within ±MAX_VALUE".
_ROUNDS_IN_RANGE = Decimal(2**53) - Decimal("0.5")
_FAR_OUT_OF_RANGE = Decimal("1e999999")  # stands for numbers whose exponent Decimal refuses
_RANGE_HINT = f"value must round to an integer within ±{MAX_VALUE} (2**53 - 1)"

_KEY_CHARACTER = "[A-Za-z0-9_.:-]"  # the one definition of what a key is made of
_KEY = re.compile(_KEY_CHARACTER + "{1,200}")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_EXAMPLE = 'send a JSON object like {"value": 3} (or a form body value=3)'


def _parse_int(text: str) -> int | Decimal:
    # int() refuses more than 4,300 digits; Decimal takes any, and the range check
    # then turns a huge number into a clear 422 rather than a parse failure.
    return int(text) if len(text) < 20 else Decimal(text)


def _parse_decimal(text: str) -> Decimal:
    """The number as written, exactly. Decimal refuses exponents past about ±10**18;
    such a number is zero, far below one half, or far out of range, so it is read as
    a number that rounds (or is refused) the same way."""
    try:
        return Decimal(text)
    except InvalidOperation:
        mantissa, _, exponent = text.lower().partition("e")
        if Decimal(mantissa) == 0 or exponent.startswith("-"):
            return Decimal(0)
        return _FAR_OUT_OF_RANGE.copy_sign(Decimal(mantissa))


# Floats are read as Decimal so rounding sees the number that was written, exactly.
_DECODER = json.JSONDecoder(parse_float=_parse_decimal, parse_int=_parse_int, parse_constant=Decimal)


class BodyLimitedRequest(Request):
    """Werkzeug reads a streamed (chunked) body only up to MAX_CONTENT_LENGTH and hands
    back that much, cut short, without a word; a body over the limit is a 413 however
    it is framed, never a shorter body parsed as if whole."""

    def get_data(self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False) -> Any:
        data = super().get_data(cache=cache, as_text=False, parse_form_data=parse_form_data)
        if (
            self.content_length is None  # with a Content-Length, Werkzeug checks it itself
            and self.environ.get("wsgi.input_terminated")  # so reading at the end cannot block
            and (limit := self.max_content_length) is not None  # (a lookup through the app: last)
            and len(data) >= limit
            and self.environ["wsgi.input"].read(1)
        ):
            raise RequestEntityTooLarge()
        return data.decode(errors="replace") if as_text else data


def parse_key(key: str) -> str:
    if _KEY.fullmatch(key) is None:
        raise bad_request("key must be 1-200 characters of A-Z a-z 0-9 _ . : -")
    return key


def parse_json(body: bytes) -> Any:
    """Any JSON document; raises ValueError when the body is not JSON at all."""
    try:
        # RFC 8259 lets a parser ignore a byte-order mark, and some Windows clients send one.
        return _DECODER.decode(body.decode("utf-8-sig"))
    except RecursionError:
        raise bad_request("the JSON is nested too deeply") from None


def round_value(raw: Any, where: str = "value") -> int:
    """A finite number (not a bool), rounded half away from zero, within ±(2**53 - 1)."""
    if isinstance(raw, bool) or not isinstance(raw, int | Decimal):
        raise unprocessable(f"{where} must be a number, not {_json_type(raw)}")
    if isinstance(raw, int):
        rounded = raw
    elif not raw.is_finite():
        raise unprocessable(f"{where} must be a finite number")
    elif raw.copy_abs() >= _ROUNDS_IN_RANGE:
        raise unprocessable(_RANGE_HINT.replace("value", where, 1))
    else:
        rounded = int(raw.to_integral_value(rounding=ROUND_HALF_UP))
    if not -MAX_VALUE <= rounded <= MAX_VALUE:
        raise unprocessable(_RANGE_HINT.replace("value", where, 1))
    return rounded


def parse_value_body(body: bytes) -> int:
    """The value of a single-event body: JSON whatever the Content-Type, else a form."""
    if not body.strip():
        raise bad_request(f"the body is empty: {_EXAMPLE}")
    try:
        document = parse_json(body)
    except ValueError:
        return _parse_form_value(body)
    if not isinstance(document, dict):
        raise unprocessable(f"the body is a JSON {_json_type(document)}: {_EXAMPLE}")
    if "value" not in document:
        raise unprocessable(f'the body has no "value" field: {_EXAMPLE}')
    return round_value(document["value"])


def _parse_form_value(body: bytes) -> int:
    try:
        fields = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True, max_num_fields=16)
    except ValueError:
        raise bad_request(f"the body is neither JSON nor a form: {_EXAMPLE}") from None
    values = [value for name, value in fields if name == "value"]
    if len(values) != 1:
        raise bad_request(f"the form body needs exactly one value field: {_EXAMPLE}")
    text = values[0].strip()
    if len(text) > 400 or _DECIMAL.fullmatch(text) is None:
        raise unprocessable("value must be a decimal number, like value=3 or value=-2.5")
    return round_value(_parse_decimal(text))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "number"


# -- batches and query parameters ----------------------------------------------

MAX_BATCH = 10_000
DEFAULT_LIMIT, MAX_LIMIT = 1000, 10_000
MAX_POINTS = 3600
DEFAULT_STEP_US = 60_000_000
_BATCH_EXAMPLE = 'send a JSON array like [{"key": "visits", "value": 3}]'
_PREFIX = re.compile(_KEY_CHARACTER + "{0,200}")
_LIMIT = re.compile(r"[0-9]{1,6}")


def parse_batch_body(body: bytes) -> list[tuple[str, int]]:
    """Every event of a batch, validated whole, so a bad one records nothing."""
    if not body.strip():
        raise bad_request(f"the body is empty: {_BATCH_EXAMPLE}")
    try:
        document = parse_json(body)
    except ValueError:
        raise bad_request(f"the body is not JSON: {_BATCH_EXAMPLE}") from None
    if not isinstance(document, list):
        raise unprocessable(f"the body is a JSON {_json_type(document)}: {_BATCH_EXAMPLE}")
    if len(document) > MAX_BATCH:
        raise unprocessable(f"a batch holds at most {MAX_BATCH} events and this one has {len(document)}: split it")
    events = []
    for index, event in enumerate(document):
        try:
            events.append(_parse_event(event))
        except Problem as problem:
            raise unprocessable(f"event at index {index}: {problem.detail}") from None
    return events


def _parse_event(event: Any) -> tuple[str, int]:
    if not isinstance(event, dict):
        raise unprocessable(f'it is a JSON {_json_type(event)}, not an object like {{"key": "visits", "value": 3}}')
    if "key" not in event or "value" not in event:
        missing = " and ".join(f'"{name}"' for name in ("key", "value") if name not in event)
        raise unprocessable(f'it has no {missing}: each event is an object like {{"key": "visits", "value": 3}}')
    key = event["key"]
    if not isinstance(key, str):
        raise unprocessable(f"key must be a string, not {_json_type(key)}")
    return parse_key(key), round_value(event["value"])


def parse_window_param(raw: str, window_us: int, slot_us: int) -> int:
    """``?window=``: above 0 and at most RINGSUM_WINDOW, rounded up to whole ticks."""
    hint = f"window must be a duration above 0 and at most RINGSUM_WINDOW ({format_duration(window_us)}), like 15m"
    micros = _duration_param(raw, hint)
    if not 0 < micros <= window_us:
        raise bad_request(f"{hint}; got {_shown(raw)}")
    return -(-micros // slot_us) * slot_us


def min_step_us(window_us: int, slot_us: int) -> int:
    """The shortest step that cuts the window into at most MAX_POINTS points.

    A series has ceil(window / step) + 1 points (the oldest step is partly outside
    the window), so the step needs ceil(window / step) <= MAX_POINTS - 1.
    """
    ticks = window_us // slot_us
    return max(1, -(-ticks // (MAX_POINTS - 1))) * slot_us


def default_step_us(window_us: int, slot_us: int) -> int:
    """One minute, as nearly as the window and tick allow."""
    one_minute_in_ticks = -(-min(DEFAULT_STEP_US, window_us) // slot_us) * slot_us
    return max(one_minute_in_ticks, min_step_us(window_us, slot_us))


def parse_step_param(raw: str | None, window_us: int, slot_us: int) -> int:
    """``?step=``: a whole number of ticks, at most the window, at most MAX_POINTS points."""
    if raw is None:
        return default_step_us(window_us, slot_us)
    shortest = min_step_us(window_us, slot_us)
    window = format_duration(window_us)
    hint = f"step must be a duration from {format_duration(shortest)} to the window ({window}), like 1m"
    micros = _duration_param(raw, hint)
    if micros % slot_us:
        raise bad_request(f"step must be a whole number of ticks (RINGSUM_RESOLUTION {format_duration(slot_us)})")
    if micros < shortest:
        raise bad_request(
            f"step must be at least {format_duration(shortest)}: shorter steps cut the window ({window}) "
            f"into more than {MAX_POINTS} points"
        )
    if micros > window_us:
        raise bad_request(f"step must be at most the window ({window})")
    return micros


def parse_prefix_param(raw: str | None) -> str:
    if raw is None or _PREFIX.fullmatch(raw) is not None:
        return raw or ""
    raise bad_request("prefix must be 0-200 characters of A-Z a-z 0-9 _ . : - (the start of the keys to list)")


def parse_after_param(raw: str | None) -> str:
    """The listing cursor: the ``next`` of the page before, so it is a key."""
    if raw is None or _KEY.fullmatch(raw) is not None:
        return raw or ""
    raise bad_request("after must be 1-200 characters of A-Z a-z 0-9 _ . : - (pass back the previous page's next)")


def parse_limit_param(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if _LIMIT.fullmatch(raw) is None or not 1 <= int(raw) <= MAX_LIMIT:
        raise bad_request(f"limit must be a whole number from 1 to {MAX_LIMIT}; got {_shown(raw)}")
    return int(raw)


def _duration_param(raw: str, hint: str) -> int:
    # Stricter than settings: exactly the documented pattern, no spaces, ASCII digits.
    try:
        if not raw.isascii() or raw != raw.strip():
            raise ValueError(raw)
        return parse_duration_us(raw)
    except ValueError:
        raise bad_request(f"{hint}; got {_shown(raw)}") from None


def _shown(raw: str) -> str:
    """The offending text, quoted and cut short, so a detail never echoes a huge input."""
    return repr(raw if len(raw) <= 40 else raw[:40] + "...")


__all__ = [
    "MAX_BATCH",
    "MAX_LIMIT",
    "MAX_POINTS",
    "MAX_VALUE",
    "Problem",
    "default_step_us",
    "min_step_us",
    "parse_after_param",
    "parse_batch_body",
    "parse_json",
    "parse_key",
    "parse_limit_param",
    "parse_prefix_param",
    "parse_step_param",
    "parse_value_body",
    "parse_window_param",
    "round_value",
]
