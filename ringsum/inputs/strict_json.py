"""JSON read strictly and cheaply: the shape checked while reading, names never repeated.

msgspec decodes straight into the shape a body must have, so a wrong shape is found
at its first byte rather than after building every object of a 1 MiB document, and
values stay ``msgspec.Raw``: their text as written, for exact rounding. A fast decoder
silently keeps the last of two equal names; ``name_tokens`` lets callers see them.
"""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec

from .errors import Malformed

T = TypeVar("T")

_NESTED = "the JSON is nested too deeply"
_SKIP = msgspec.json.Decoder(msgspec.Raw)  # checks the syntax of a whole document, builds nothing
_POSITION = re.compile(r"\(byte (\d+)\)$")
_EXPECTED = re.compile(r"Expected `(\w+)`, got `(\w+)`")
_UNKNOWN = re.compile(r"Object contains unknown field `(.*)`", re.DOTALL)
_AT = re.compile(r" - at `\$(?:\[(\d+)\])?(?:\.(\w+))?`$")
# msgspec's type names, in the words of JSON
_JSON_TYPES = {"int": "number", "float": "number", "str": "string", "bool": "boolean"}


class NotJson(ValueError):
    """The text is not JSON; ``position`` is the byte (of its UTF-8) where it stops being."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        found = _POSITION.search(message)
        self.position = int(found[1]) if found else None


class WrongShape(Exception):
    """Well-formed JSON of the wrong shape: msgspec's validation error, in parts.

    ``index`` is the array element (batch event) concerned, ``field`` the field whose
    type is wrong, ``found`` the JSON type found there and ``unknown`` a field name the
    shape does not have.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        at = _AT.search(message)
        self.index = int(at[1]) if at and at[1] is not None else None
        self.field = at[2] if at else None
        head = message[: at.start()] if at else message
        expected = _EXPECTED.fullmatch(head)
        self.found = _JSON_TYPES.get(expected[2], expected[2]) if expected else None
        unknown = _UNKNOWN.fullmatch(head)
        self.unknown = unknown[1] if unknown else None


def decode(decoder: msgspec.json.Decoder[T], text: str) -> T:
    """``text`` in the decoder's shape; raises NotJson, WrongShape, or Malformed when too deep.

    A wrong shape stops msgspec at once, but docs/api.md#statuses answers "not JSON" (400) before
    "wrong shape" (422), so the rest of the text is then checked for syntax alone.
    """
    try:
        return decoder.decode(text)
    except msgspec.ValidationError as error:
        check_syntax(text)
        raise WrongShape(str(error)) from None
    except msgspec.DecodeError as error:
        raise NotJson(str(error)) from None
    except RecursionError:
        raise Malformed(_NESTED) from None


def check_syntax(text: str) -> None:
    """Raises NotJson unless ``text`` is one JSON document (Malformed when nested too deeply)."""
    try:
        _SKIP.decode(text)
    except msgspec.DecodeError as error:
        raise NotJson(str(error)) from None
    except RecursionError:
        raise Malformed(_NESTED) from None


def name_tokens(text: str | bytes, name: str) -> int:
    """How many JSON strings in valid JSON ``text`` spell ``name``, escaped or not.

    Without a backslash, a string equal to ``name`` is the literal ``"name"`` and no
    string can hold a ``"``, so counting that literal is exact. With backslashes, the
    escapes that could spell a letter of ``name`` (``\\u006b``) are written out first,
    and the others (``\\\\``, ``\\"``) replaced by inert characters. Linear, in C.
    """
    if isinstance(text, bytes):
        text = text.decode()
    if "\\" in text:
        text = _spell_out(text, name)
    return text.count(f'"{name}"')


def _spell_out(text: str, name: str) -> str:
    # str.replace pairs backslashes left to right, as JSON does: after the first
    # replacement every remaining backslash starts an escape.
    text = text.replace("\\\\", "__").replace('\\"', "__")
    for letter in set(name):
        for escape in {f"\\u{ord(letter):04x}", f"\\u{ord(letter):04X}"}:
            text = text.replace(escape, letter)
    return text
