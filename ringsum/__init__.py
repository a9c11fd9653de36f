"""ringsum: the sum of what was recorded per key during the last hour, over HTTP.

Importing the package loads no web framework: Flask and the routes load when an app is
built, so what needs only the storage (the checkpoint's fold, a child process started
every RINGSUM_CHECKPOINT) or only the settings starts in a fraction of the time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .config import ConfigError, Settings, read_settings
from .storage import check_uri, open_storage, shown_uri

if TYPE_CHECKING:
    from flask import Flask


def load_settings(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] = os.environ) -> Settings:
    """Every RINGSUM_* setting read and checked, the storage URI by the backend it names
    (without connecting); ConfigError names the first bad one, with no password."""
    settings = read_settings(overrides, environ)
    try:
        check_uri(settings.storage_uri)
    except ValueError as error:
        raise ConfigError("RINGSUM_STORAGE_URI", shown_uri(settings.storage_uri), str(error)) from None
    return settings


def create_app(
    overrides: Mapping[str, Any] | None = None,
    *,
    clock: Callable[[], int] | None = None,
    lock_timeout_s: float = 0.0,
) -> Flask:
    """Build the app. ``overrides`` take the place of RINGSUM_* environment variables;
    ``clock`` (epoch µs) replaces the storage's clock, for tests. Memory storage waits
    up to ``lock_timeout_s`` for its data dir (a reload's new worker waits for the old
    one); ringsum.storage.DataDirError when it cannot have it."""
    from flask import Flask

    from . import api, auth, cors, dashboard, observability, state
    from .body_limit import BodyLimitedRequest
    from .problems import register_problem_handlers

    settings = load_settings(overrides)
    # The dashboard blueprint serves its own files; no app-wide /static/ besides.
    app = Flask(__name__, static_folder=None)
    # Merged slashes would answer /metric//x with a redirect Flask renders as HTML;
    # unmerged, such a path simply matches no route: a 404 problem.
    app.url_map.merge_slashes = False
    app.request_class = BodyLimitedRequest
    # docs/api.md#settings: each setting is also the Flask config key of its name; what is there is
    # written from the validated Settings, the one source of truth (code reads those
    # through ringsum.state).
    app.config.update(settings.as_config(), MAX_CONTENT_LENGTH=settings.max_body)
    storage = open_storage(settings.storage_uri, settings.storage_options(), clock=clock, lock_timeout_s=lock_timeout_s)
    state.attach(app, settings, storage)

    register_problem_handlers(app)
    observability.init_app(app)  # first: its timer starts before any other hook runs
    cors.init_app(app)  # before the token's check: a browser's preflight carries no token
    auth.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(dashboard.bp)
    return app


__all__ = ["ConfigError", "Settings", "create_app", "load_settings"]
