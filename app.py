"""Entry point in a checkout: ``python app.py`` serves (as the installed ``ringsum``
command does); ``app`` is the WSGI app for ``flask --app app`` and ``gunicorn app:app``.

``app`` is built on first use, not at import: ``python app.py`` builds its own in each
worker, and a tool that only imports this module opens no storage (memory storage holds
its data dir, so a second open would be refused or, worse, split the data).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ringsum.serving.cli import main

if TYPE_CHECKING:
    from flask import Flask

_built: dict[str, Flask] = {}


def __getattr__(name: str) -> Flask:
    """``app.app``: built once, when a WSGI server or ``flask`` first asks for it."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if "app" not in _built:
        from ringsum import create_app

        _built["app"] = create_app()
    return _built["app"]


if __name__ == "__main__":
    sys.exit(main(prog="python app.py"))
