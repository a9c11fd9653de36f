"""Shared fixtures. ``app``/``client`` run every API test once per storage backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ringsum import create_app

BACKENDS = ["memory"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend under test; the Redis tests add theirs to BACKENDS."""
    return request.param


@pytest.fixture
def storage_uri(backend: str) -> str:
    return {"memory": "memory://"}[backend]


@pytest.fixture
def make_app(storage_uri: str) -> Iterator[Callable[..., Flask]]:
    """Build apps on the backend under test with RINGSUM_* overrides; closed afterwards."""
    apps: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        app = create_app({"RINGSUM_STORAGE_URI": storage_uri, **overrides})
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["ringsum.storage"].close()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
