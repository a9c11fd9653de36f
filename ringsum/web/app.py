"""The Flask app: settings read, storage opened, routes, problems and hooks registered.
Only this module (and what it loads) imports Flask: ``import ringsum`` does not."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask

from ..config import load_settings
from ..storage import open_storage
from . import api, auth, cors, dashboard, observability, state
from .body_limit import BodyLimitedRequest
from .problems import register_problem_handlers


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
    settings = load_settings(overrides)
    # The dashboard blueprint serves its own files; no app-wide /static/ besides.
    app = Flask("ringsum", static_folder=None)  # named as before: its logger is "ringsum"
    # Merged slashes would answer /metric//x with a redirect Flask renders as HTML;
    # unmerged, such a path simply matches no route: a 404 problem.
    app.url_map.merge_slashes = False
    app.request_class = BodyLimitedRequest
    # docs/api.md#settings: each setting is also the Flask config key of its name; what is there is
    # written from the validated Settings, the one source of truth (code reads those
    # through ringsum.web.state).
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
