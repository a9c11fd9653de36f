"""Storage backends, chosen by the scheme of RINGSUM_STORAGE_URI (as the limits library does)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING

from .base import KeyLimitReached, Series, Storage, StorageError, StorageStats, StorageUnavailable

if TYPE_CHECKING:
    from ..config import Settings

# scheme -> "module:factory"; the module is imported only when its scheme is used.
SCHEMES: dict[str, str] = {
    "memory": "ringsum.storage.memory:MemoryStorage",
}


def open_storage(settings: Settings, clock: Callable[[], int] | None = None) -> Storage:
    """Build the backend the URI names; ``clock`` (µs) is for tests only."""
    module_name, _, factory_name = SCHEMES[settings.storage_uri.partition("://")[0]].partition(":")
    factory = getattr(import_module(module_name), factory_name)
    return factory(settings, clock=clock)


__all__ = [
    "SCHEMES",
    "KeyLimitReached",
    "Series",
    "Storage",
    "StorageError",
    "StorageStats",
    "StorageUnavailable",
    "open_storage",
]
