"""The client's mistakes as plain exceptions: what reading a request (keys, values,
parameters, JSON, the Idempotency-Key header) raises, with no web framework beneath it.

The web layer turns each into its ``application/problem+json`` answer (``problems.py``,
the one place that names statuses), so the inputs can be read and tested without Flask.
"""

from __future__ import annotations


class InputError(ValueError):
    """Something in the request the client must change; ``detail`` says what, in the
    client's words (it becomes the problem's detail)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Malformed(InputError):
    """The request cannot be read as meant: not JSON, a name given twice, a key or a
    query parameter that is not one (a 400)."""


class Unprocessable(InputError):
    """The request reads, but what it says cannot be recorded: the wrong shape, a value
    that is not a number or is out of range, too many events (a 422)."""


def shown(raw: str) -> str:
    """The offending text, quoted and cut short, so a detail never echoes a huge input."""
    return repr(raw if len(raw) <= 40 else raw[:40] + "...")
