"""How the app reads a request body: the limit (RINGSUM_MAX_BODY) holding for streamed
bodies too, and the body the edge already read whole taken as it is."""

from __future__ import annotations

from typing import Any

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge

from ..http.wire import WHOLE_BODY

__all__ = ["WHOLE_BODY", "BodyLimitedRequest"]


class BodyLimitedRequest(Request):
    """Werkzeug reads a streamed (chunked) body only up to MAX_CONTENT_LENGTH and hands
    back that much, cut short, without a word; a body over the limit is a 413 however
    it is framed, never a shorter body parsed as if whole."""

    def get_data(self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False) -> Any:
        whole = self.environ.get(WHOLE_BODY)
        if whole is not None and not parse_form_data:
            return whole.decode(errors="replace") if as_text else whole
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
