"""ringsum: the sum of what was recorded per key during the last hour, over HTTP.

Importing the package loads no web framework: Flask and the routes load when an app is
built (``create_app``, from ``app.py``), so what needs only the storage (the checkpoint's
fold, a child process started every RINGSUM_CHECKPOINT) or only the settings starts in a
fraction of the time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from flask import Flask


def create_app(overrides: Mapping[str, Any] | None = None, **options: Any) -> Flask:
    """The app (``app.create_app``, which says what ``options`` are); Flask loads here,
    when an app is built, not when ringsum is imported (``app.py`` imports this first)."""
    from .web.app import create_app as build

    return build(overrides, **options)


__all__ = ["ConfigError", "Settings", "create_app", "load_settings"]
