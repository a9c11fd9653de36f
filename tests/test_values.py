"""Values and bodies through HTTP (docs/api.md#values-and-rounding, docs/api.md#errors): rounding, range, exact sums, and every
malformed body or key answered with a 4xx problem that changes nothing."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from fractions import Fraction
from math import floor
from urllib.parse import quote

import pytest
from helpers import ON_MEMORY_ONLY, assert_problem, total
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringsum.inputs.errors import InputError, Malformed
from ringsum.inputs.values import _PLAIN_BODY, parse_batch_body, parse_value_body, read_value_body
from ringsum.web import state

MAX = 2**53 - 1
_fresh_keys = itertools.count()


def fresh_key() -> str:
    return f"k{next(_fresh_keys)}"


def recorded_as(client, body: bytes | str, **post) -> int:
    """What one body adds to a fresh key's sum."""
    key = fresh_key()
    response = client.post(f"/metric/{key}", data=body, **post)
    assert response.status_code == 200, response.get_data(as_text=True)
    return total(client, key)


def value_body(written: str) -> str:
    """A JSON body with the number exactly as written (json= would re-spell floats)."""
    return '{"value": ' + written + "}"


def half_away_from_zero(number: Fraction) -> int:
    """The oracle, independent of the code under test: exact rational arithmetic."""
    magnitude = floor(abs(number) + Fraction(1, 2))
    return magnitude if number >= 0 else -magnitude


# -- rounding ------------------------------------------------------------------


@pytest.mark.parametrize(
    "written, rounded",
    [
        ("2.5", 3),
        ("-2.5", -3),
        ("0.5", 1),
        ("-0.5", -1),
        ("1.5", 2),
        ("0.4", 0),
        ("-0.4", 0),
        ("0.49999999999999994", 0),  # floor(x + 0.5) in binary floats gives 1
        ("-0.49999999999999994", 0),
        ("2.4999999999999999999", 2),  # read as written, not as the nearest float (2.5)
        ("0." + "4" * 5000, 0),
        ("7", 7),
        ("-0", 0),
        ("1e2", 100),
        ("2.5E0", 3),
        ("1e-400", 0),
        ("1e-99999999999999999999", 0),  # an exponent too large for Decimal itself
        (str(MAX), MAX),
        (str(-MAX), -MAX),
        (f"{MAX}.4", MAX),
        (f"-{MAX}.4", -MAX),
    ],
)
def test_a_json_value_is_rounded_half_away_from_zero(client, written: str, rounded: int) -> None:
    assert recorded_as(client, value_body(written)) == rounded


@pytest.mark.parametrize("written, rounded", [("2.5", 3), ("-2.5", -3), ("0.4", 0), ("+4", 4), (str(MAX), MAX)])
def test_a_form_value_is_rounded_the_same_way(client, written: str, rounded: int) -> None:
    assert recorded_as(client, {"value": written}) == rounded
    assert recorded_as(client, f"value={written}".replace("+", "%2B")) == rounded


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    number=st.one_of(
        st.decimals(min_value=-MAX, max_value=MAX, allow_nan=False, allow_infinity=False, places=3),
        st.decimals(min_value=-20, max_value=20, allow_nan=False, allow_infinity=False).map(lambda d: d.normalize()),
        st.integers(-4, 4).map(lambda n: Decimal(n) + Decimal("0.5")),
    )
)
def test_any_value_in_range_is_recorded_rounded(client, number: Decimal) -> None:
    written = format(number, "f") if abs(number) < 1e20 else str(number)
    assert recorded_as(client, value_body(written)) == half_away_from_zero(Fraction(number))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(number=st.floats(min_value=-MAX, max_value=MAX, allow_nan=False))
def test_any_float_a_client_sends_is_rounded_as_written(client, number: float) -> None:
    written = json.dumps(number)
    assert recorded_as(client, value_body(written)) == half_away_from_zero(Fraction(Decimal(written)))


def test_rounding_happens_per_value_and_sums_are_exact_integers(client) -> None:
    for _ in range(3):
        client.post("/metric/halves", json={"value": 1.5})
        client.post("/metric/fractions", json={"value": 0.4})
        client.post("/metric/big", json={"value": MAX})
    client.post("/metric/big", data=b'{"value": 1}')
    assert total(client, "halves") == 6  # 2 + 2 + 2, not round(4.5)
    assert total(client, "fractions") == 0  # 0 + 0 + 0, not round(1.2)
    raw = client.get("/metric/big/sum").get_data(as_text=True)
    assert json.loads(raw) == {"value": 3 * MAX + 1}
    assert raw.replace(" ", "") == '{"value":' + str(3 * MAX + 1) + "}"  # an integer, not 2.7e16 or 27021597764222976.0


# -- bodies that are refused -----------------------------------------------------

DEEP = "[" * 200_000 + "]" * 200_000

BAD_BODIES = {
    "not JSON": (b"this is not json", 400, "JSON"),
    "empty": (b"", 400, "empty"),
    "only whitespace": (b"  \n ", 400, "empty"),
    "a list": (b'[{"value": 3}]', 422, "object"),
    "a bare number": (b"3", 422, "object"),
    "a bare string": (b'"3"', 422, "object"),
    "no value": (b'{"amount": 3}', 422, '"value"'),
    "a string value": (b'{"value": "3"}', 422, "number"),
    "true": (b'{"value": true}', 422, "number"),
    "false": (b'{"value": false}', 422, "number"),
    "null": (b'{"value": null}', 422, "number"),
    # NaN and Infinity are not JSON (RFC 8259): a 400, whose detail still says what to send.
    "NaN": (b'{"value": NaN}', 400, "finite"),
    "Infinity": (b'{"value": Infinity}', 400, "finite"),
    "-Infinity": (b'{"value": -Infinity}', 400, "finite"),
    "1e400": (b'{"value": 1e400}', 422, "2**53"),
    "1e300": (b'{"value": 1e300}', 422, "2**53"),
    "exponent past Decimal": (b'{"value": 1e99999999999999999999}', 422, "2**53"),
    "2**53": (b'{"value": 9007199254740992}', 422, "2**53"),
    "-(2**53)": (b'{"value": -9007199254740992}', 422, "2**53"),
    "rounds to 2**53": (b'{"value": 9007199254740991.5}', 422, "2**53"),
    "rounds to -(2**53)": (b'{"value": -9007199254740991.5}', 422, "2**53"),
    "nested object": (b'{"value": {"value": 3}}', 422, "number"),
    "a list value": (b'{"value": [3]}', 422, "number"),
    "5,000 digits": (b'{"value": 1' + b"0" * 4999 + b"}", 422, "2**53"),
    "200,000-deep nesting": (DEEP.encode(), 400, "nested"),
    "200,000-deep value": (('{"value": ' + DEEP + "}").encode(), 400, "nested"),
    "invalid UTF-8": (b'{"value": "\xff\xfe"}', 400, "JSON"),
    "invalid UTF-8 alone": (b"\xc3\x28", 400, "JSON"),
    "JSON then garbage": (b'{"value": 3} trailing', 400, "JSON"),
    "form without value": (b"amount=3", 400, "value"),
    "form with two values": (b"value=1&value=2", 400, "one value"),
    "form with empty value": (b"value=", 422, "decimal"),
    "form with a word": (b"value=three", 422, "decimal"),
    "form with NaN": (b"value=NaN", 422, "decimal"),
    "form out of range": (b"value=9007199254740992", 422, "2**53"),
    "form exponent past Decimal": (b"value=1e99999999999999999999", 422, "2**53"),
}


@ON_MEMORY_ONLY
@pytest.mark.parametrize("body, status, word", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_bad_body_is_a_4xx_problem_and_changes_nothing(client, body: bytes, status: int, word: str) -> None:
    assert client.post("/metric/k", json={"value": 5}).status_code == 200
    assert_problem(client.post("/metric/k", data=body), status, word)
    assert_problem(client.post("/metric/k/", data=body), status, word)
    assert total(client, "k") == 5


def test_refusals_change_nothing_on_any_storage(app, client) -> None:
    """The refusals above run on memory: they happen while the request is read, before
    any storage is called. One of each kind here, on every storage."""
    assert client.post("/metric/k", json={"value": 5}).status_code == 200
    refused = [
        client.post("/metric/k", data=b'{"value": "5"}'),
        client.post("/metric/k", data=b'{"value": 1, "value": 2}'),
        client.post("/metric/k", data="value=٣".encode(), content_type="application/x-www-form-urlencoded"),
        client.post("/metric/k", data=b'{"value": 1, "unit": "people"}'),
        client.post("/metric", data=b'[{"key": "k", "value": 1}, {"key": "a", "key": "b", "value": 1}]'),
        client.post("/metric", data=b'[{"key": "k", "value": 1}, {"key": "b", "value": 2, "unit": 3}]'),
        client.post("/metric/a%20b", json={"value": 3}),
    ]
    assert [response.status_code for response in refused] == [422, 400, 400, 422, 400, 422, 400]
    assert state.storage(app).keys().metrics == [("k", 5)]


BAD_KEYS = {
    "201 characters": "a" * 201,
    "a space": "a%20b",
    "non-ASCII": "caf%C3%A9",
    "a semicolon": "a;b",
    "a comma": "a,b",
    "a percent sign": "a%25b",
}


@ON_MEMORY_ONLY
@pytest.mark.parametrize("key", BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_a_bad_key_is_a_400_problem_and_records_nothing(app, client, key: str) -> None:
    assert_problem(client.post(f"/metric/{key}", json={"value": 3}), 400, "key", "200", "A-Z")
    assert_problem(client.post(f"/metric/{key}/", json={"value": 3}), 400, "key")
    assert_problem(client.get(f"/metric/{key}/sum"), 400, "key")
    assert state.storage(app).keys().metrics == []


def test_every_allowed_key_character_and_length_is_accepted(client) -> None:
    for key in ["a", "a" * 200, "AZaz09_.:-", "user:42.visits-total_1"]:
        assert client.post(f"/metric/{key}", json={"value": 2}).status_code == 200
        assert total(client, key) == 2


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["value", "v", ""]), inner, max_size=2),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=64),
        st.text(max_size=64).map(str.encode),
        JSONISH.map(lambda doc: json.dumps(doc).encode()),
        JSONISH.map(lambda doc: json.dumps({"value": doc}).encode()),
    ),
    key=st.one_of(st.text(min_size=1, max_size=8), st.from_regex(r"[A-Za-z0-9_.:-]{1,8}", fullmatch=True)),
)
def test_no_body_or_key_gets_a_5xx(client, body: bytes, key: str) -> None:
    path = "/metric/" + quote(key, safe="")
    before = client.get(f"{path}/sum")
    response = client.post(path, data=body)
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code != 200:
        assert response.mimetype == "application/problem+json" and response.get_json()["detail"]
        assert client.get(f"{path}/sum").get_data() == before.get_data()


# -- ambiguous bodies and fields besides the accepted ones (docs/api.md#ambiguous-input) --

AMBIGUOUS_BODIES = {
    "value twice": b'{"value": 1, "value": 2}',
    "a string, then a number": b'{"value": "x", "value": 1}',
    "a number, then a string": b'{"value": 1, "value": "x"}',
    "value three times": b'{"value": 1, "value": 1, "value": 1}',
    "spelled with an escape": b'{"value": 1, "val\\u0075e": 2}',
    "spelled with an upper-case escape": b'{"\\u0076alue": 1, "value": 2}',
    "after a byte-order mark": b'\xef\xbb\xbf{"value": 1, "value": 2}',
    "around a value holding the name": b'{"value": 1, "value": ["value"]}',
}


@ON_MEMORY_ONLY
@pytest.mark.parametrize("body", AMBIGUOUS_BODIES.values(), ids=AMBIGUOUS_BODIES.keys())
def test_a_body_naming_value_twice_is_a_400_and_changes_nothing(client, body: bytes) -> None:
    assert client.post("/metric/k", json={"value": 5}).status_code == 200
    assert_problem(client.post("/metric/k", data=body), 400, '"value"', "more than once")
    assert total(client, "k") == 5


@pytest.mark.parametrize(
    "body, rounded",
    [
        (b'{"val\\u0075e": 2.5}', 3),  # one name, escaped: not a repetition
        (b'{"value": 1, "x": "value"}', None),  # an extra field (refused for that), not a repetition
        (b'{"value": "value"}', None),  # a string value that spells the name
        (b'{"value": "\\"value\\""}', None),
    ],
)
def test_a_name_written_once_is_not_a_repetition(client, body: bytes, rounded: int | None) -> None:
    response = client.post("/metric/k", data=body)
    if rounded is not None:
        assert response.status_code == 200 and total(client, "k") == rounded
    else:
        assert response.status_code == 422, response.get_data(as_text=True)


NON_ASCII_DIGITS = {
    "Arabic-Indic three, percent-encoded": b"value=%D9%A3",
    "full-width three, percent-encoded": b"value=%EF%BC%93",
    "Arabic-Indic three, raw UTF-8": "value=٣".encode(),
    "full-width three, raw UTF-8": "value=３".encode(),
    "Devanagari digits in a decimal": b"value=1.%E0%A5%AB",
}


@ON_MEMORY_ONLY
@pytest.mark.parametrize("body", NON_ASCII_DIGITS.values(), ids=NON_ASCII_DIGITS.keys())
def test_a_form_value_with_digits_outside_ascii_is_refused(client, body: bytes) -> None:
    response = client.post("/metric/k", data=body, content_type="application/x-www-form-urlencoded")
    assert 400 <= response.status_code < 500
    assert_problem(response, response.status_code, "value")
    assert total(client, "k") == 0


@ON_MEMORY_ONLY
@pytest.mark.parametrize(
    "body, field",
    [
        (b'{"value": 2, "unit": "people"}', "'unit'"),
        (b'{"unit": "people", "value": 2}', "'unit'"),
        (b'{"value": 1, "x": [1, 1, 1]}', "'x'"),
        (b'{"Value": 1}', "'Value'"),
        (b'{"value": 1, "' + b"y" * 500 + b'": 1}', "'yyyy"),  # named, but cut short
    ],
)
def test_a_field_besides_value_is_a_422_naming_it(client, body: bytes, field: str) -> None:
    problem = assert_problem(client.post("/metric/k", data=body), 422, field, '{"value": 3}')
    assert len(problem["detail"]) < 200
    assert total(client, "k") == 0


BATCH_AMBIGUITIES = {
    "key twice": ('{"key": "a", "key": "b", "value": 1}', "key"),
    "value twice": ('{"key": "a", "value": 1, "value": 2}', "value"),
    "a string value, then a number": ('{"key": "a", "value": "x", "value": 1}', "value"),
    "key twice, once escaped": ('{"k\\u0065y": "a", "key": "b", "value": 1}', "key"),
    "key twice, value missing": ('{"key": "a", "key": "b"}', "key"),
}


@ON_MEMORY_ONLY
@pytest.mark.parametrize("event, name", BATCH_AMBIGUITIES.values(), ids=BATCH_AMBIGUITIES.keys())
def test_a_batch_event_naming_a_field_twice_is_a_400_and_records_nothing(client, event: str, name: str) -> None:
    body = '[{"key": "a", "value": 1}, {"key": "key", "value": 2}, ' + event + "]"
    assert_problem(client.post("/metric", data=body), 400, "event at index 2", f'"{name}"', "more than once")
    assert [total(client, key) for key in ("a", "b", "key")] == [0, 0, 0]


def test_keys_named_key_or_value_are_no_repetition(client) -> None:
    body = '[{"key": "key", "value": 1}, {"value": 2, "key": "value"}, {"key": "k\\u0065y", "value": 3}]'
    assert client.post("/metric", data=body).get_json() == {"recorded": 3}
    assert [total(client, key) for key in ("key", "value")] == [4, 2]


@ON_MEMORY_ONLY
@pytest.mark.parametrize("field", ["unit", "timestamp", "Key"])
def test_a_batch_event_with_another_field_is_a_422_naming_it(client, field: str) -> None:
    body = json.dumps([{"key": "a", "value": 1}, {"key": "b", "value": 2, field: 3}])
    assert_problem(client.post("/metric", data=body), 422, "event at index 1", repr(field), '"key"', '"value"')
    assert total(client, "a") == 0


# -- the shortcut for {"value": <number>} answers exactly as the full reading ------


def outcome(parse, body: bytes) -> int | tuple[int, str]:
    try:
        return parse(body)
    except InputError as error:
        return 400 if isinstance(error, Malformed) else 422, error.detail


NUMBER_TEXT = st.one_of(
    st.integers(-(2**60), 2**60).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(json.dumps),
    st.from_regex(r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,25})?", fullmatch=True),
)
ODD_VALUE = st.sampled_from(
    ['"3"', "true", "null", "NaN", "-Infinity", "[1]", "{}", "1.", ".5", "+1", "01", "1e", "-", "0x10", "١", "1_0"]
)
WHITESPACE = st.text(alphabet=" \t\n\r", max_size=2)
ODD_SPACE = st.sampled_from(["", " ", "\x0b", "\x0c", "\u00a0", ",", "}"])


@settings(max_examples=400, deadline=None)
@given(
    number=NUMBER_TEXT,
    odd=st.one_of(st.none(), ODD_VALUE),
    spaces=st.lists(WHITESPACE, min_size=6, max_size=6),
    odd_space=st.one_of(st.none(), st.tuples(st.integers(0, 5), ODD_SPACE)),
    extra=st.sampled_from(["", ', "value": 1', ', "x": 1', ', "val\\u0075e": 2']),
    bom=st.booleans(),
)
def test_the_shortcut_answers_as_the_full_reading(number, odd, spaces, odd_space, extra, bom) -> None:
    if odd_space is not None:
        spaces[odd_space[0]] += odd_space[1]
    s = spaces
    text = f'{s[0]}{{{s[1]}"value"{s[2]}:{s[3]}{odd or number}{s[4]}{extra}}}{s[5]}'
    body = (b"\xef\xbb\xbf" if bom else b"") + text.encode()
    assert outcome(parse_value_body, body) == outcome(read_value_body, body)
    if odd is None and odd_space is None and not extra:
        assert _PLAIN_BODY.fullmatch(body.removeprefix(b"\xef\xbb\xbf"))  # the shortcut was taken


# -- repeated names in batches, against an independent reading -------------------


@st.composite
def events_with_names(draw: st.DrawFn) -> tuple[str, bool]:
    """One event's JSON text, and whether it names a field twice."""
    names = draw(st.lists(st.sampled_from(["key", "value"]), min_size=1, max_size=4))
    members = []
    for name in names:
        escape = draw(st.sampled_from(["", "{:04x}", "{:04X}"]))  # the first letter plain or escaped
        spelled = "\\u" + escape.format(ord(name[0])) + name[1:] if escape else name
        if name == "key":
            member_value = json.dumps(draw(st.sampled_from(["a", "key", "value", "b.c"])))
        else:
            member_value = draw(st.sampled_from(["1", "2.5", '"value"', '["key", "value"]', '{"value": 1}']))
        members.append(f'"{spelled}": {member_value}')
    return "{" + ", ".join(members) + "}", len(set(names)) < len(names)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(events_with_names(), max_size=6))
def test_a_repeated_name_is_found_in_the_event_that_has_it(events) -> None:
    body = ("[" + ", ".join(text for text, _ in events) + "]").encode()
    repeating = [index for index, (_, repeats) in enumerate(events) if repeats]
    answer = outcome(parse_batch_body, body)
    if repeating:
        assert answer[0] == 400 and answer[1].startswith(f"event at index {repeating[0]} names ")
    else:
        assert not isinstance(answer, tuple) or "more than once" not in answer[1]
