"""ringsum: the sum of what was recorded per key during the last hour, over HTTP."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask

from .config import ConfigError, Settings, load_settings, raw_settings
from .problems import register_problem_handlers
from .storage import open_storage


def create_app(overrides: Mapping[str, Any] | None = None, *, clock: Callable[[], int] | None = None) -> Flask:
    """Build the app. ``overrides`` take the place of RINGSUM_* environment variables;
    ``clock`` (epoch µs) replaces the storage's clock, for tests."""
    settings = load_settings(overrides)
    app = Flask(__name__)
    app.config.update(raw_settings(overrides))
    app.config.update(RINGSUM_SETTINGS=settings, MAX_CONTENT_LENGTH=settings.max_body)
    app.extensions["ringsum.storage"] = open_storage(settings, clock=clock)

    from . import api

    register_problem_handlers(app)
    app.register_blueprint(api.bp)
    return app


__all__ = ["ConfigError", "Settings", "create_app", "load_settings"]
