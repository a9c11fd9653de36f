"""nginx and Caddy in front of a test server (``tools/proxies.py`` runs them with the
shipped ``deploy/`` configs, addresses swapped).

Without nginx or Caddy on the machine the tests skip, unless RINGSUM_REQUIRE_PROXIES=1
(CI installs both), where they fail."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from tools.proxies import installed, running


def require(program: str, package: str | None = None, flag: str = "RINGSUM_REQUIRE_PROXIES") -> str:
    """Where ``program`` is; the test skips without it, or fails when ``flag`` is 1 (CI)."""
    path = installed(program)
    if path is None:
        reason = f"{program} is not installed (apt-get install {package or program})"
        if os.environ.get(flag) == "1":
            pytest.fail(f"{flag}=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return path


def proxy(
    kind: str, upstream_port: int, *, http_port: int | None = None, tls: tuple[Path, Path] | None = None
) -> contextlib.AbstractContextManager[str]:
    """``kind`` ("nginx" or "caddy") in front of 127.0.0.1:``upstream_port``: its base URL
    (https:// when nginx is given ``tls``; ``http_port`` is nginx's redirecting port)."""
    return running(require(kind), kind, upstream_port, http_port=http_port, tls=tls)
