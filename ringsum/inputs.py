"""Parsing of keys, values, bodies and query parameters into clear 4xx problems."""

from __future__ import annotations

import json
import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import parse_qsl

from .problems import Problem, bad_request, unprocessable

MAX_VALUE = 2**53 - 1
# |x| < 2**53 - 0.5 is exactly "x rounds to an integer within ±MAX_VALUE".
_ROUNDS_IN_RANGE = Decimal(2**53) - Decimal("0.5")
_RANGE_HINT = f"value must round to an integer within ±{MAX_VALUE} (2**53 - 1)"

_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_EXAMPLE = 'send a JSON object like {"value": 3} (or a form body value=3)'


def _parse_int(text: str) -> int | Decimal:
    # int() refuses more than 4,300 digits; Decimal takes any, and the range check
    # then turns a huge number into a clear 422 rather than a parse failure.
    return int(text) if len(text) < 20 else Decimal(text)


# Floats are read as Decimal so rounding sees the number that was written, exactly.
_DECODER = json.JSONDecoder(parse_float=Decimal, parse_int=_parse_int, parse_constant=Decimal)


def parse_key(key: str) -> str:
    if _KEY.fullmatch(key) is None:
        raise bad_request("key must be 1-200 characters of A-Z a-z 0-9 _ . : -")
    return key


def parse_json(body: bytes) -> Any:
    """Any JSON document; raises ValueError when the body is not JSON at all."""
    try:
        return _DECODER.decode(body.decode("utf-8"))
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
        fields = parse_qsl(body.decode("ascii"), strict_parsing=True, max_num_fields=16)
    except ValueError:
        raise bad_request(f"the body is neither JSON nor a form: {_EXAMPLE}") from None
    values = [value for name, value in fields if name == "value"]
    if len(values) != 1:
        raise bad_request(f"the form body needs exactly one value field: {_EXAMPLE}")
    text = values[0].strip()
    if len(text) > 400 or _DECIMAL.fullmatch(text) is None:
        raise unprocessable("value must be a decimal number, like value=3 or value=-2.5")
    return round_value(Decimal(text))


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


__all__ = ["MAX_VALUE", "Problem", "parse_json", "parse_key", "parse_value_body", "round_value"]
