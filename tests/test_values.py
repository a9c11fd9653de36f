"""Values and bodies through HTTP (SPEC §1, §4): rounding, range, exact sums, and every
malformed body or key answered with a 4xx problem that changes nothing."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from fractions import Fraction
from math import floor
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_errors import assert_problem

MAX = 2**53 - 1
_fresh_keys = itertools.count()


def fresh_key() -> str:
    return f"k{next(_fresh_keys)}"


def total(client, key: str) -> int:
    response = client.get(f"/metric/{key}/sum")
    assert response.status_code == 200
    return response.get_json()["value"]


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
    "NaN": (b'{"value": NaN}', 422, "finite"),
    "Infinity": (b'{"value": Infinity}', 422, "finite"),
    "-Infinity": (b'{"value": -Infinity}', 422, "finite"),
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


@pytest.mark.parametrize("body, status, word", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_bad_body_is_a_4xx_problem_and_changes_nothing(client, body: bytes, status: int, word: str) -> None:
    assert client.post("/metric/k", json={"value": 5}).status_code == 200
    assert_problem(client.post("/metric/k", data=body), status, word)
    assert_problem(client.post("/metric/k/", data=body), status, word)
    assert total(client, "k") == 5


BAD_KEYS = {
    "201 characters": "a" * 201,
    "a space": "a%20b",
    "non-ASCII": "caf%C3%A9",
    "a semicolon": "a;b",
    "a comma": "a,b",
    "a percent sign": "a%25b",
}


@pytest.mark.parametrize("key", BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_a_bad_key_is_a_400_problem_and_records_nothing(app, client, key: str) -> None:
    assert_problem(client.post(f"/metric/{key}", json={"value": 3}), 400, "key", "200", "A-Z")
    assert_problem(client.post(f"/metric/{key}/", json={"value": 3}), 400, "key")
    assert_problem(client.get(f"/metric/{key}/sum"), 400, "key")
    assert app.extensions["ringsum.storage"].keys().metrics == []


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
