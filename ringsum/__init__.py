"""ringsum: the sum of what was recorded per key during the last hour, over HTTP."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask

from . import state
from .body_limit import BodyLimitedRequest
from .config import ConfigError, Settings, load_settings, raw_settings
from .problems import register_problem_handlers
from .storage import open_storage


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
    app = Flask(__name__, static_folder=None)
    # Merged slashes would answer /metric//x with a redirect Flask renders as HTML;
    # unmerged, such a path simply matches no route: a 404 problem.
    app.url_map.merge_slashes = False
    app.request_class = BodyLimitedRequest
    # SPEC: each setting is also the Flask config key of its name (read-only: code reads
    # the validated Settings through ringsum.state, the one source of truth).
    app.config.update(raw_settings(overrides), MAX_CONTENT_LENGTH=settings.max_body)
    state.attach(app, settings, open_storage(settings, clock=clock, lock_timeout_s=lock_timeout_s))

    from . import api, auth, dashboard, observability

    register_problem_handlers(app)
    observability.init_app(app)  # first: its timer starts before any other hook runs
    auth.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(dashboard.bp)
    return app


__all__ = ["ConfigError", "Settings", "create_app", "load_settings"]
