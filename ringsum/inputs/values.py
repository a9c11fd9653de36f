"""Request bodies to values: one value or a batch of events, each rounded exactly as written.

The order of the checks is the contract (docs/parsing.md): not JSON (400), the wrong
shape or a field the body may not have (422), a name given twice (400), then each
value and key (422).
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from itertools import repeat
from urllib.parse import parse_qsl

import msgspec

from .errors import InputError, Malformed, Unprocessable, shown
from .keys import is_key, parse_key
from .strict_json import NotJson, WrongShape, decode, name_tokens

MAX_VALUE = 2**53 - 1
MAX_BATCH = 10_000
# |x| < 2**53 - 0.5 is exactly "x rounds to an integer within ±MAX_VALUE".
_ROUNDS_IN_RANGE = Decimal(2**53) - Decimal("0.5")
_FAR_OUT_OF_RANGE = Decimal("1e999999")  # stands for numbers whose exponent Decimal refuses
_RANGE_HINT = f"{{}} must round to an integer within ±{MAX_VALUE} (2**53 - 1)"

_BOM = b"\xef\xbb\xbf"  # RFC 8259 lets a parser ignore it, and some Windows clients send one
_EXAMPLE = 'send a JSON object like {"value": 3} (or a form body value=3)'
_EVENT = '{"key": "visits", "value": 3}'
_BATCH_EXAMPLE = f"send a JSON array like [{_EVENT}]"
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")  # ASCII digits only
# The first character of a JSON value that is not a number, and what it is.
_NOT_A_NUMBER = {ord("{"): "object", ord("["): "array", ord('"'): "string", ord("t"): "boolean"}
_NOT_A_NUMBER |= {ord("f"): "boolean", ord("n"): "null"}
_NOT_FINITE = (b"NaN", b"Infinity", b"-Infinity")


class _SingleBody(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    value: msgspec.Raw = msgspec.Raw()  # empty when the body has no "value"


class _Event(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    key: str | msgspec.UnsetType = msgspec.UNSET
    value: msgspec.Raw = msgspec.Raw()


_SINGLE = msgspec.json.Decoder(_SingleBody)
_BATCH = msgspec.json.Decoder(list[_Event])
_EVENT_TEXTS = msgspec.json.Decoder(list[msgspec.Raw])

# What nearly every client sends: {"value": <number>}, nothing else. Its answer is the
# full reading's (tests/test_values.py checks the two against each other), only cheaper.
_WS = rb"[ \t\n\r]*"
_PLAIN_BODY = re.compile(
    _WS + rb'\{' + _WS + rb'"value"' + _WS + rb":" + _WS
    + rb"(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)" + _WS + rb"\}" + _WS
)  # fmt: skip


def parse_value_body(body: bytes) -> int:
    """The value of a single-event body: JSON whatever the Content-Type, else a form."""
    plain = _PLAIN_BODY.fullmatch(body.removeprefix(_BOM))
    return round_number(plain[1]) if plain is not None else read_value_body(body)


def read_value_body(body: bytes) -> int:
    """``parse_value_body`` without its shortcut: every rule, in order."""
    if not body.strip():
        raise Malformed(f"the body is empty: {_EXAMPLE}")
    try:
        text = body.decode("utf-8-sig")
        document = decode(_SINGLE, text)
    except (UnicodeDecodeError, NotJson) as not_json:
        return _parse_form_value(body, not_json)
    except WrongShape as wrong:
        if wrong.unknown is not None:
            raise Unprocessable(f'the body may hold only "value", not {shown(wrong.unknown)}: {_EXAMPLE}') from None
        raise Unprocessable(f"the body is a JSON {wrong.found}: {_EXAMPLE}") from None
    value = bytes(document.value)
    if name_tokens(text, "value") > bool(value) + name_tokens(value, "value"):
        raise Malformed(f'the body names "value" more than once, which is ambiguous: {_EXAMPLE}')
    if not value:
        raise Unprocessable(f'the body has no "value" field: {_EXAMPLE}')
    return round_number(value)


def round_number(text: bytes, where: str = "value") -> int:
    """A JSON value's text, as a number rounded half away from zero within ±MAX_VALUE."""
    if (kind := _NOT_A_NUMBER.get(text[0])) is not None:
        raise Unprocessable(f"{where} must be a number, not {kind}")
    plain = _round_plain([text])
    return plain[0] if plain is not None else _round_exact(text.decode(), where)


def _round_plain(values: list[bytes]) -> list[int] | None:
    """Every JSON number rounded, when all are plain decimals (no exponent, under 20
    characters) within ±MAX_VALUE; else None, and ``_round_exact`` decides.

    The common case, in bulk: W.F rounds to W plus one away from zero when F starts with
    5-9, exactly, with no Decimal and no call per value (a batch of 10,000 in one go).
    """
    if b"".join(values).translate(None, b"-.0123456789") or max(map(len, values), default=0) >= 20:
        return None  # an exponent or a non-number; or a number too long for this shortcut
    rounded = [
        int(whole) + (-1 if whole[:1] == b"-" else 1) * (fraction[:1] >= b"5")
        for whole, _, fraction in map(bytes.partition, values, repeat(b"."))
    ]
    return rounded if not rounded or (max(rounded) <= MAX_VALUE and min(rounded) >= -MAX_VALUE) else None


def _round_exact(text: str, where: str) -> int:
    """Any decimal number (an exponent, many digits, a form's ``+1`` or ``.5``), rounded
    half away from zero through Decimal, or refused when it falls outside ±MAX_VALUE."""
    number = _parse_decimal(text)
    if number.copy_abs() >= _ROUNDS_IN_RANGE:
        raise Unprocessable(_RANGE_HINT.format(where))
    return int(number.to_integral_value(rounding=ROUND_HALF_UP))


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


def _parse_form_value(body: bytes, not_json: ValueError) -> int:
    try:
        fields = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True, max_num_fields=16)
    except ValueError:
        raise Malformed(f"the body is neither JSON ({_why_not_json(body, not_json)}) nor a form: {_EXAMPLE}") from None
    values = [value for name, value in fields if name == "value"]
    if len(values) != 1:
        raise Malformed(f"the form body needs exactly one value field: {_EXAMPLE}")
    text = values[0].strip()
    if len(text) > 400 or _DECIMAL.fullmatch(text) is None:  # ٣ or ３ are digits to Python, not to us
        raise Unprocessable("value must be a decimal number in ASCII digits, like value=3 or value=-2.5")
    return _round_exact(text, "value")


def _why_not_json(body: bytes, not_json: ValueError) -> str:
    if not isinstance(not_json, NotJson):
        return "not UTF-8"
    if not_json.position is not None and body.removeprefix(_BOM)[not_json.position :].startswith(_NOT_FINITE):
        return "NaN and Infinity are not JSON numbers: value must be a finite number"
    return str(not_json).removeprefix("JSON is malformed: ")


def parse_batch_body(body: bytes) -> list[tuple[str, int]]:
    """Every event of a batch, validated whole, so a bad one records nothing."""
    if not body.strip():
        raise Malformed(f"the body is empty: {_BATCH_EXAMPLE}")
    try:
        text = body.decode("utf-8-sig")
        events = decode(_BATCH, text)
    except (UnicodeDecodeError, NotJson):
        raise Malformed(f"the body is not JSON: {_BATCH_EXAMPLE}") from None
    except WrongShape as wrong:
        raise Unprocessable(_batch_shape_detail(wrong)) from None
    if len(events) > MAX_BATCH:
        raise Unprocessable(f"a batch holds at most {MAX_BATCH} events and this one has {len(events)}: split it")
    keys = [event.key for event in events]
    values = [bytes(event.value) for event in events]
    distinct_keys = set(keys)
    _refuse_repeated_names(text, keys, distinct_keys, values)
    if msgspec.UNSET not in distinct_keys and b"" not in values and all(map(is_key, distinct_keys)):  # type: ignore[arg-type]
        try:  # the common batch, in bulk; any problem is found again below, with its event's index
            return list(zip(keys, _round_plain(values) or list(map(round_number, values)), strict=True))  # type: ignore[arg-type]
        except InputError:
            pass
    recorded = []
    for index, (key, value) in enumerate(zip(keys, values, strict=True)):
        try:
            recorded.append(_read_event(key, value))
        except InputError as problem:
            raise Unprocessable(f"event at index {index}: {problem.detail}") from None
    return recorded


def _read_event(key: str | msgspec.UnsetType, value: bytes) -> tuple[str, int]:
    if key is msgspec.UNSET or not value:
        missing = " and ".join(f'"{name}"' for name, there in (("key", key), ("value", value)) if not there)
        raise Unprocessable(f"it has no {missing}: each event is an object like {_EVENT}")
    return parse_key(key), round_number(value)


def _batch_shape_detail(wrong: WrongShape) -> str:
    if wrong.index is None:
        return f"the body is a JSON {wrong.found}: {_BATCH_EXAMPLE}"
    where = f"event at index {wrong.index}"
    if wrong.unknown is not None:
        return f'{where}: an event holds only "key" and "value", not {shown(wrong.unknown)}: like {_EVENT}'
    if wrong.field is not None:
        return f"{where}: {wrong.field} must be a string, not {wrong.found}"
    return f"{where}: it is a JSON {wrong.found}, not an object like {_EVENT}"


def _refuse_repeated_names(text: str, keys: list, distinct_keys: set, values: list[bytes]) -> None:
    """A 400 naming the first event (and field) that names a field twice.

    Every JSON string spelling "key" or "value" is either a field name or sits in a
    key or value we hold; any more than that are names given twice. Linear and in C,
    except when there is one to find.
    """
    quoted = [value for value in values if value.startswith((b"[", b"{", b'"'))] if b'"' in b"".join(values) else []
    inside = b"".join(quoted)  # the values strings can hide in
    missing_keys = keys.count(msgspec.UNSET) if msgspec.UNSET in distinct_keys else 0
    for name, named in (("key", len(keys) - missing_keys), ("value", len(values) - values.count(b""))):
        held = (keys.count(name) if name in distinct_keys else 0) + (name_tokens(inside, name) if inside else 0)
        if name_tokens(text, name) > named + held:
            index, repeated = _first_event_repeating(text, keys, values)
            raise Malformed(
                f'event at index {index} names "{repeated}" more than once, which is ambiguous: like {_EVENT}'
            )


def _first_event_repeating(text: str, keys: list, values: list[bytes]) -> tuple[int, str]:
    for index, event in enumerate(_EVENT_TEXTS.decode(text)):
        for name, named in (("key", keys[index] is not msgspec.UNSET), ("value", bool(values[index]))):
            held = (keys[index] == name) + (name_tokens(values[index], name) if values[index] else 0)
            if name_tokens(bytes(event), name) > named + held:
                return index, name
    raise AssertionError("a repeated name was counted but not found")  # pragma: no cover
