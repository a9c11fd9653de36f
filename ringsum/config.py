"""Settings from the environment (or create_app overrides), validated once at start."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .storage import SCHEMES, check_storage_uri, redacted_uri
from .storage.journal import FsyncMode
from .units import format_duration, parse_duration_us, parse_size


class ConfigError(Exception):
    """A setting we cannot run with; the message names it and says what it accepts."""

    def __init__(self, name: str, value: object, accepts: str) -> None:
        super().__init__(f"{name}={value!r} is not accepted: {accepts}")
        self.name = name


@dataclass(frozen=True)
class Settings:
    window_us: int
    resolution_us: int
    storage_uri: str
    max_keys: int
    max_body: int
    api_token: str | None
    redis_timeout_us: int
    data_dir: str | None = None  # None: memory storage keeps nothing, writes nothing
    fsync: FsyncMode = FsyncMode.EVERYSEC
    checkpoint_us: int = 60_000_000

    @property
    def slot_us(self) -> int:
        """The unit every window, step and time is a multiple of (1 µs in exact mode)."""
        return self.resolution_us or 1


DEFAULTS: dict[str, str] = {
    "RINGSUM_WINDOW": "1h",
    "RINGSUM_RESOLUTION": "1s",
    "RINGSUM_STORAGE_URI": "memory://",
    "RINGSUM_MAX_KEYS": "100000",
    "RINGSUM_MAX_BODY": "1MiB",
    "RINGSUM_API_TOKEN": "",
    "RINGSUM_REDIS_TIMEOUT": "1s",
    "RINGSUM_DATA_DIR": "data",
    "RINGSUM_FSYNC": "everysec",
    "RINGSUM_CHECKPOINT": "1m",
}


def _read(name: str, raw: Any, parse: Callable[[Any], Any], accepts: str) -> Any:
    try:
        return parse(raw)
    except (TypeError, ValueError) as error:
        raise ConfigError(name, raw, accepts) from error


def _positive_int(raw: Any) -> int:
    value = int(str(raw).strip())
    if value < 1:
        raise ValueError(raw)
    return value


def raw_settings(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Every RINGSUM_* setting as given: overrides first, then the environment, then defaults."""
    return {name: (overrides or {}).get(name, environ.get(name, default)) for name, default in DEFAULTS.items()}


def load_settings(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] = os.environ) -> Settings:
    """Read and validate every RINGSUM_* setting; ConfigError names the first bad one."""
    raw = raw_settings(overrides, environ)

    window = _read(
        "RINGSUM_WINDOW", raw["RINGSUM_WINDOW"], parse_duration_us, "a positive duration such as 90s, 15m or 1h"
    )
    if window <= 0:
        raise ConfigError("RINGSUM_WINDOW", raw["RINGSUM_WINDOW"], "a positive duration such as 90s, 15m or 1h")
    resolution = _read(
        "RINGSUM_RESOLUTION",
        raw["RINGSUM_RESOLUTION"],
        parse_duration_us,
        "a duration such as 1s or 500ms, or 0 for exact mode",
    )
    if resolution and (resolution > window or window % resolution):
        raise ConfigError(
            "RINGSUM_RESOLUTION",
            raw["RINGSUM_RESOLUTION"],
            f"a duration that divides RINGSUM_WINDOW ({format_duration(window)}) into whole ticks, or 0 for exact mode",
        )
    storage_uri = str(raw["RINGSUM_STORAGE_URI"]).strip()
    if storage_uri.partition("://")[0] not in SCHEMES or "://" not in storage_uri:
        raise ConfigError(
            "RINGSUM_STORAGE_URI",
            redacted_uri(storage_uri),
            f"a URI starting with {' or '.join(s + '://' for s in SCHEMES)}",
        )
    try:
        check_storage_uri(storage_uri)
    except ValueError as error:
        raise ConfigError("RINGSUM_STORAGE_URI", redacted_uri(storage_uri), f"a URI that works ({error})") from None
    max_keys = _read("RINGSUM_MAX_KEYS", raw["RINGSUM_MAX_KEYS"], _positive_int, "a whole number of keys, at least 1")
    max_body = _read("RINGSUM_MAX_BODY", raw["RINGSUM_MAX_BODY"], parse_size, "a size such as 65536, 64KiB or 1MiB")
    if max_body < 64:
        raise ConfigError(
            "RINGSUM_MAX_BODY", raw["RINGSUM_MAX_BODY"], "a size of at least 64 bytes, such as 64KiB or 1MiB"
        )
    token = str(raw["RINGSUM_API_TOKEN"] or "") or None
    redis_timeout = _read(
        "RINGSUM_REDIS_TIMEOUT", raw["RINGSUM_REDIS_TIMEOUT"], parse_duration_us, "a duration such as 500ms or 2s"
    )
    if not 1_000 <= redis_timeout <= 60_000_000:
        raise ConfigError(
            "RINGSUM_REDIS_TIMEOUT", raw["RINGSUM_REDIS_TIMEOUT"], "a duration from 1ms to 60s, such as 500ms"
        )
    data_dir = str(raw["RINGSUM_DATA_DIR"] or "").strip() or None
    if data_dir is not None and os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise ConfigError("RINGSUM_DATA_DIR", data_dir, "a directory (created if missing), or empty to keep nothing")
    fsync = _read(
        "RINGSUM_FSYNC", str(raw["RINGSUM_FSYNC"]).strip().lower(), FsyncMode, "one of always, everysec or no"
    )
    checkpoint = _read(
        "RINGSUM_CHECKPOINT", raw["RINGSUM_CHECKPOINT"], parse_duration_us, "a duration from 1s to 1d, such as 1m"
    )
    if not 1_000_000 <= checkpoint <= 86_400_000_000:
        raise ConfigError("RINGSUM_CHECKPOINT", raw["RINGSUM_CHECKPOINT"], "a duration from 1s to 1d, such as 1m")
    return Settings(
        window,
        resolution,
        storage_uri,
        max_keys,
        max_body,
        token,
        redis_timeout,
        data_dir=data_dir,
        fsync=fsync,
        checkpoint_us=checkpoint,
    )
