"""Storage backends, chosen by the scheme of RINGSUM_STORAGE_URI (as the limits library does)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .base import (
    DataDirError,
    DataDirInUse,
    IdempotencyKeyReused,
    KeyLimitReached,
    Marker,
    MarkerLimitReached,
    Series,
    Storage,
    StorageError,
    StorageIncompatible,
    StorageStats,
    StorageUnavailable,
    SumOutOfRange,
    UnsupportedDataFormat,
)

if TYPE_CHECKING:
    from ..config import Settings

# scheme -> "module:factory"; the module is imported only when its scheme is used.
SCHEMES: dict[str, str] = {
    "memory": "ringsum.storage.memory:MemoryStorage",
    "redis": "ringsum.storage.redis:RedisStorage",
    "rediss": "ringsum.storage.redis:RedisStorage",
    "redis+cluster": "ringsum.storage.redis:RedisStorage",
}


def _factory(uri: str) -> Callable[..., Storage]:
    module_name, _, factory_name = SCHEMES[uri.partition("://")[0]].partition(":")
    return getattr(import_module(module_name), factory_name)


def storage_class(uri: str) -> type[Storage]:
    """The backend a URI names, unbuilt: what it declares about itself
    (``single_process``, ``uses_data_dir``) decides how it may be served."""
    return _factory(uri)  # type: ignore[return-value]


def open_storage(settings: Settings, clock: Callable[[], int] | None = None, lock_timeout_s: float = 0.0) -> Storage:
    """Build the backend the URI names; ``clock`` (µs) is for tests only. Memory storage
    waits up to ``lock_timeout_s`` for its data dir's lock (Redis has no data dir)."""
    backend = storage_class(settings.storage_uri)
    if backend.uses_data_dir:
        return backend(settings, clock=clock, lock_timeout_s=lock_timeout_s)  # type: ignore[call-arg]
    return backend(settings, clock=clock)  # type: ignore[call-arg]


def redacted_uri(uri: str) -> str:
    """The URI with its password masked, for messages and logs."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    credentials, _, hosts = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{credentials.partition(':')[0]}:***@{hosts}").geturl()


def check_storage_uri(uri: str) -> None:
    """Raise ValueError when the backend can tell, without connecting, that ``uri`` cannot work."""
    check = getattr(import_module(_factory(uri).__module__), "check_uri", None)
    if check is not None:
        check(uri)


__all__ = [
    "SCHEMES",
    "DataDirError",
    "DataDirInUse",
    "IdempotencyKeyReused",
    "KeyLimitReached",
    "Marker",
    "MarkerLimitReached",
    "Series",
    "Storage",
    "StorageError",
    "StorageIncompatible",
    "StorageStats",
    "StorageUnavailable",
    "SumOutOfRange",
    "UnsupportedDataFormat",
    "check_storage_uri",
    "open_storage",
    "redacted_uri",
    "storage_class",
]
