"""The running app's state, reached one way: its settings, its storage, its metrics.

Code asks these functions, never ``app.extensions`` or ``app.config`` by string; a
test or the server passes the app, a request handler lets them find the current one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, current_app

if TYPE_CHECKING:
    from ..config import Settings
    from ..storage import Storage
    from .observability import Metrics

_EXTENSION = "ringsum"


@dataclass
class AppState:
    settings: Settings
    storage: Storage
    metrics: Metrics | None = None  # set once observability is installed


def attach(app: Flask, settings: Settings, storage: Storage) -> AppState:
    state = app.extensions[_EXTENSION] = AppState(settings, storage)
    return state


def is_ringsum(app: object) -> bool:
    """Whether ``app`` is ringsum's own (not, say, a benchmark baseline served alike)."""
    return isinstance(app, Flask) and _EXTENSION in app.extensions


def state(app: Flask | None = None) -> AppState:
    return (app or current_app._get_current_object()).extensions[_EXTENSION]  # type: ignore[attr-defined]


def settings(app: Flask | None = None) -> Settings:
    return state(app).settings


def storage(app: Flask | None = None) -> Storage:
    return state(app).storage


def metrics(app: Flask | None = None) -> Metrics:
    found = state(app).metrics
    assert found is not None, "observability.init_app has not run"
    return found


def close_app(app: Flask) -> None:
    """Release what the app holds: the storage's data dir, threads and connections.
    (Nothing to do for an app that is not ringsum's, such as a benchmark baseline.)"""
    if is_ringsum(app):
        storage(app).close()
