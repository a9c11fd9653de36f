"""Storage backends, chosen by the scheme of a storage URI (as the limits library does).

Each backend reads, checks and shows its own URIs; this registry only finds it.
"""

from __future__ import annotations

from importlib import import_module

from .base import (
    Clock,
    DataDirError,
    DataDirInUse,
    FsyncMode,
    IdempotencyKeyReused,
    KeyLimitReached,
    Marker,
    MarkerLimitReached,
    NotDurable,
    Series,
    Storage,
    StorageError,
    StorageIncompatible,
    StorageOptions,
    StorageStats,
    StorageUnavailable,
    SumOutOfRange,
    UnsupportedDataFormat,
    WindowStats,
)

# scheme -> "module:class"; the module is imported only when its scheme is used.
SCHEMES: dict[str, str] = {
    "memory": "ringsum.storage.memory:MemoryStorage",
    "redis": "ringsum.storage.redis:RedisStorage",
    "rediss": "ringsum.storage.redis:RedisStorage",
    "redis+cluster": "ringsum.storage.redis_cluster:RedisClusterStorage",
}
KNOWN = "a URI starting with " + " or ".join(f"{scheme}://" for scheme in SCHEMES)


def storage_class(uri: str) -> type[Storage]:
    """The backend a URI names, unbuilt: what it declares about itself
    (``single_process``, ``uses_data_dir``) decides how it may be served.
    ValueError for a scheme no backend reads."""
    scheme, separator, _ = uri.partition("://")
    if not separator or scheme not in SCHEMES:
        raise ValueError(KNOWN)
    module_name, _, class_name = SCHEMES[scheme].partition(":")
    return getattr(import_module(module_name), class_name)


def open_storage(
    uri: str, options: StorageOptions, *, clock: Clock | None = None, lock_timeout_s: float = 0.0
) -> Storage:
    """Build the backend ``uri`` names; see Storage.open."""
    return storage_class(uri).open(uri, options, clock=clock, lock_timeout_s=lock_timeout_s)


def check_uri(uri: str) -> None:
    """Raise ValueError, saying what would work, when no backend can use ``uri``: an
    unknown scheme, or one its backend can tell is wrong without connecting."""
    backend = storage_class(uri)
    try:
        backend.check_uri(uri)
    except ValueError as error:
        raise ValueError(f"a URI that works ({error})") from None


def shown_uri(uri: str) -> str:
    """``uri`` as logs and messages may show it: its backend masks any secret, and a URI
    no backend reads shows its scheme only."""
    try:
        backend = storage_class(uri)
    except ValueError:
        scheme, separator, _ = uri.partition("://")
        return f"{scheme}://..." if separator else "(not a URI; not shown, it may hold a password)"
    return backend.shown_uri(uri)


__all__ = [
    "SCHEMES",
    "Clock",
    "DataDirError",
    "DataDirInUse",
    "FsyncMode",
    "IdempotencyKeyReused",
    "KeyLimitReached",
    "Marker",
    "MarkerLimitReached",
    "NotDurable",
    "Series",
    "Storage",
    "StorageError",
    "StorageIncompatible",
    "StorageOptions",
    "StorageStats",
    "StorageUnavailable",
    "SumOutOfRange",
    "UnsupportedDataFormat",
    "WindowStats",
    "check_uri",
    "open_storage",
    "shown_uri",
    "storage_class",
]
