"""ringsum.inputs.strict_json: names counted exactly however they are escaped, and msgspec's
errors read the way values.py relies on (a msgspec upgrade that rewords them fails here)."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringsum.inputs.errors import Malformed
from ringsum.inputs.strict_json import NotJson, WrongShape, check_syntax, decode, name_tokens

NAMES = ["key", "value", "x", "valu", "values"]


def oracle_tokens(text: str, name: str) -> int:
    """Strings equal to ``name``, names and values alike, as the stdlib decoder sees them."""
    count = 0

    def pairs(items: list) -> list:
        nonlocal count
        count += sum(key == name for key, _ in items)
        return [value for _, value in items]  # walked like an array's items

    def walk(node: object) -> None:
        nonlocal count
        if isinstance(node, str):
            count += node == name
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(text, object_pairs_hook=pairs))
    return count


def escaped(text: str, data: st.DataObject) -> str:
    """``text`` (a JSON string's content) with some characters written as escapes."""
    out = []
    for char in text:
        style = data.draw(st.sampled_from(["plain", "plain", "lower", "upper"]))
        if char in '"\\' or (style == "plain" and char.isascii() and char.isprintable()):
            out.append(json.dumps(char)[1:-1] if char in '"\\' else char)
        else:
            out.append(f"\\u{ord(char):04x}" if style != "upper" else f"\\u{ord(char):04X}")
    return '"' + "".join(out) + '"'


STRINGS = st.one_of(st.sampled_from(NAMES), st.text(alphabet='kevaluy"\\x\u00e9 ', max_size=6))


@st.composite
def documents(draw: st.DrawFn, depth: int = 0) -> str:
    data = draw(st.data())
    kind = draw(st.sampled_from(["string", "number", "array", "object"] if depth < 3 else ["string", "number"]))
    if kind == "string":
        return escaped(draw(STRINGS), data)
    if kind == "number":
        return str(draw(st.integers(-5, 5)))
    items = draw(st.lists(documents(depth + 1), max_size=3))
    if kind == "array":
        return "[" + ", ".join(items) + "]"
    names = [escaped(draw(STRINGS), data) for _ in items]
    return "{" + ", ".join(f"{name}: {item}" for name, item in zip(names, items, strict=True)) + "}"


@given(text=documents(), name=st.sampled_from(NAMES))
def test_name_tokens_counts_what_a_full_decoder_sees(text: str, name: str) -> None:
    assert name_tokens(text, name) == oracle_tokens(text, name)
    assert name_tokens(text.encode(), name) == oracle_tokens(text, name)


def test_escaped_backslashes_and_quotes_do_not_fool_the_count() -> None:
    assert name_tokens(r'["\\", "value"]', "value") == 1
    assert name_tokens(r'["\\u0076alue"]', "value") == 0  # an escaped backslash, then text
    assert name_tokens(r'["\\\u0076alue"]', "value") == 0  # a backslash, then "value"
    assert name_tokens(r'["\"value\""]', "value") == 0
    assert name_tokens(r'{"\u0076\u0061\u006C\u0075\u0065": 1}', "value") == 1


class Event(msgspec.Struct, forbid_unknown_fields=True):
    key: str
    value: msgspec.Raw


EVENTS = msgspec.json.Decoder(list[Event])


@pytest.mark.parametrize(
    "text, index, field, found, unknown",
    [
        ('{"key": "a"}', None, None, "object", None),
        ("[1]", 0, None, "number", None),
        ('[{"key": "a", "value": 1}, "x"]', 1, None, "string", None),
        ("[null]", 0, None, "null", None),
        ('[{"key": true, "value": 1}]', 0, "key", "boolean", None),
        ('[{"key": "a", "value": 1, "a` - at `$[9]": 1}]', 0, None, None, "a` - at `$[9]"),
    ],
)
def test_a_wrong_shape_is_read_into_its_parts(text, index, field, found, unknown) -> None:
    with pytest.raises(WrongShape) as raised:
        decode(EVENTS, text)
    assert (raised.value.index, raised.value.field, raised.value.found, raised.value.unknown) == (
        index,
        field,
        found,
        unknown,
    )


@pytest.mark.parametrize("text", ["[1, 2", "[1] x", '{"a": NaN}', "[1,]", "", "\ufeff[]"])
def test_text_that_is_not_json_is_not_json_even_when_its_shape_is_wrong_first(text: str) -> None:
    with pytest.raises(NotJson):
        check_syntax(text)
    with pytest.raises(NotJson):
        decode(EVENTS, "{" + text if text.startswith("[") else text)


def test_the_position_where_json_stops_is_kept() -> None:
    with pytest.raises(NotJson) as raised:
        check_syntax('{"value": NaN}')
    assert raised.value.position == 10


def test_nesting_too_deep_is_a_400() -> None:
    with pytest.raises(Malformed) as raised:  # a 400
        decode(EVENTS, "[" * 100_000 + "]" * 100_000)
    assert "nested" in raised.value.detail
