"""Settings from the environment (or create_app overrides), validated once at start.

``SETTINGS`` is the one table of them: name, default, how it is read, what it accepts
and what it means. Validation, ``python app.py --help``, the Flask config and the
README's table all come from it, so they cannot disagree.

The table knows no backend: the storage URI is checked by the backend it names, when
``load_settings`` puts the two together.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from .core.units import format_duration, parse_duration_us, parse_size
from .http.access_log import AccessLogMode, LogFormat, TrustedProxies
from .inputs.keys import is_prefix
from .storage import check_uri, shown_uri
from .storage.base import FsyncMode, StorageOptions


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
    data_dir: str | None  # None: memory storage keeps nothing, writes nothing
    fsync: FsyncMode
    checkpoint_us: int
    read_timeout_us: int
    idle_timeout_us: int
    worker_timeout_us: int  # 0: a silent worker is never killed
    redis_timeout_us: int
    max_idempotency_keys: int
    access_log: AccessLogMode
    log_format: LogFormat
    trusted_proxies: TrustedProxies
    export: tuple[str, ...]  # key prefixes whose sums /metrics exports ("" = every key); () = none
    export_max_keys: int
    cors_origins: tuple[str, ...]  # empty: no cross-origin access

    @property
    def slot_us(self) -> int:
        """The unit every window, step and time is a multiple of (1 µs in exact mode)."""
        return self.resolution_us or 1

    def storage_options(self) -> StorageOptions:
        """What the storage is built with (each backend takes the options it uses)."""
        return StorageOptions(
            window_us=self.window_us,
            resolution_us=self.resolution_us,
            max_keys=self.max_keys,
            max_idempotency_keys=self.max_idempotency_keys,
            data_dir=self.data_dir,
            fsync=self.fsync,
            checkpoint_us=self.checkpoint_us,
            redis_timeout_us=self.redis_timeout_us,
        )

    def as_config(self) -> dict[str, str]:
        """Each setting under its own name, as the text that means the value in use
        (``RINGSUM_WINDOW: "1h"``), for the Flask config."""
        return {setting.name: setting.text(getattr(self, setting.field)) for setting in SETTINGS}


class _Refused(ValueError):
    """A value refused with its own explanation instead of the setting's ``accepts``."""


@dataclass(frozen=True)
class Setting:
    name: str
    field: str  # its attribute on Settings
    default: str
    parse: Callable[[str], Any]  # raises ValueError (or _Refused) for a value it refuses
    accepts: str  # said when a value is refused
    meaning: str  # said by --help and the README
    text: Callable[[Any], str] = str  # a value in use as text that ``parse`` reads back

    def read(self, raw: Any) -> Any:
        try:
            return self.parse(str(raw).strip())
        except _Refused as refused:
            raise ConfigError(self.name, raw, str(refused)) from None
        except (TypeError, ValueError) as error:
            raise ConfigError(self.name, raw, self.accepts) from error


def _duration(low_us: int, high_us: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        micros = parse_duration_us(text)
        if not low_us <= micros <= high_us:
            raise ValueError(text)
        return micros

    return parse


def _worker_timeout(text: str) -> int:
    micros = parse_duration_us(text)
    if micros and not 1_000_000 <= micros <= 86_400_000_000:
        raise ValueError(text)
    return micros


def _whole_number(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _body_size(text: str) -> int:
    size = parse_size(text)
    if size < 64:
        raise ValueError(text)
    return size


def _export_prefixes(text: str) -> tuple[str, ...]:
    """``api.,orders.`` or ``*``, as the fewest prefixes that cover the same keys (a
    prefix inside another's keys is dropped), sorted: each key is exported once."""
    if not text:
        return ()
    written = [prefix.strip() for prefix in text.split(",")]
    if "*" in written:
        return ("",)
    if not all(prefix and is_prefix(prefix) for prefix in written):
        raise ValueError(text)
    kept: list[str] = []
    for prefix in sorted(set(written)):  # a prefix sorts right before the prefixes it covers
        if not kept or not prefix.startswith(kept[-1]):
            kept.append(prefix)
    return tuple(kept)


def _export_text(prefixes: tuple[str, ...]) -> str:
    return "*" if prefixes == ("",) else ",".join(prefixes)


def _duration_text(micros: int) -> str:
    return format_duration(micros) if micros else "0"


def _enum_text(value: Any) -> str:
    return str(value.value)


def _unset_as_empty(value: str | None) -> str:
    return value or ""


def _data_dir(text: str) -> str | None:
    if text and os.path.exists(text) and not os.path.isdir(text):
        raise ValueError(text)
    return text or None


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origins(text: str) -> tuple[str, ...]:
    """Origins as browsers send them in ``Origin``: lower-case scheme and host, the port
    only when it is not the scheme's default, no path."""
    origins = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        parts = urlsplit(item)
        if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
            raise _Refused(f"{item!r} is not an origin: write scheme://host[:port], such as https://app.example.com")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise _Refused(
                f"{item!r} has a path: an origin is scheme://host[:port] only, such as https://app.example.com"
            )
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port  # hostname is lower-cased
        shown_host = f"[{host}]" if ":" in host else host
        origins.append(f"{scheme}://{shown_host}" + (f":{port}" if port and port != _DEFAULT_PORTS[scheme] else ""))
    return tuple(dict.fromkeys(origins))


def _origins_text(origins: tuple[str, ...]) -> str:
    return ",".join(origins)


_YEAR_US = 366 * 86_400_000_000

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "RINGSUM_WINDOW",
        "window_us",
        "1h",
        _duration(1, _YEAR_US),
        "a positive duration such as 90s, 15m or 1h",
        "the window: sums are over the values recorded this long ago at most",
        _duration_text,
    ),
    Setting(
        "RINGSUM_RESOLUTION",
        "resolution_us",
        "1s",
        _duration(0, _YEAR_US),
        "a duration such as 1s or 500ms, or 0 for exact mode",
        "the tick: values in one tick are merged, so a key holds at most window/tick + 1 entries; "
        "0 = exact mode; must divide the window",
        _duration_text,
    ),
    Setting(
        "RINGSUM_STORAGE_URI",
        "storage_uri",
        "memory://",
        str,  # checked by the backend it names: see load_settings
        "a storage URI",
        "memory://, redis://host:port/db, rediss://... (TLS), redis+cluster://host:port[,host:port]",
    ),
    Setting(
        "RINGSUM_MAX_KEYS",
        "max_keys",
        "100000",
        _whole_number,
        "a whole number of keys, at least 1",
        "live keys held at most (memory storage); one more is a 507",
    ),
    Setting(
        "RINGSUM_MAX_BODY",
        "max_body",
        "1MiB",
        _body_size,
        "a size of at least 64 bytes, such as 65536, 64KiB or 1MiB",
        "request body limit; larger is a 413",
    ),
    Setting(
        "RINGSUM_API_TOKEN",
        "api_token",
        "",
        lambda text: text or None,
        "any text",
        "when set, /metric... and /metrics need Authorization: Bearer <token>",
        _unset_as_empty,
    ),
    Setting(
        "RINGSUM_DATA_DIR",
        "data_dir",
        "data",
        _data_dir,
        "a directory (created if missing), or empty to keep nothing",
        "memory storage: where the write-ahead log and snapshot live (relative to the working directory); "
        "empty = keep nothing",
        _unset_as_empty,
    ),
    Setting(
        "RINGSUM_FSYNC",
        "fsync",
        "everysec",
        lambda text: FsyncMode(text.lower()),
        "one of always, everysec or no",
        "when the log is forced to disk: always (before each answer), everysec, no (left to the OS)",
    ),
    Setting(
        "RINGSUM_CHECKPOINT",
        "checkpoint_us",
        "1m",
        _duration(1_000_000, 86_400_000_000),
        "a duration from 1s to 1d, such as 1m",
        "how often the log is folded into a snapshot, which bounds the disk used",
        _duration_text,
    ),
    Setting(
        "RINGSUM_READ_TIMEOUT",
        "read_timeout_us",
        "10s",
        _duration(100_000, 3_600_000_000),
        "a duration from 100ms to 1h, such as 10s",
        "the longest a client may take to send a whole request; then 408 and nothing recorded",
        _duration_text,
    ),
    Setting(
        "RINGSUM_IDLE_TIMEOUT",
        "idle_timeout_us",
        "30s",
        _duration(100_000, 3_600_000_000),
        "a duration from 100ms to 1h, such as 30s",
        "how long a keep-alive connection is kept open with nothing under way, and how long a client may leave its answers unread before its connection is dropped",
        _duration_text,
    ),
    Setting(
        "RINGSUM_WORKER_TIMEOUT",
        "worker_timeout_us",
        "30s",
        _worker_timeout,
        "a duration from 1s to 1d, such as 30s, or 0 to never replace a silent worker",
        "a serving worker whose event loop is silent this long (hung, stopped, or one request running "
        "on the loop this long) is killed and replaced; start-up is not counted; 0 = never",
        _duration_text,
    ),
    Setting(
        "RINGSUM_REDIS_TIMEOUT",
        "redis_timeout_us",
        "1s",
        _duration(1_000, 60_000_000),
        "a duration from 1ms to 60s, such as 500ms",
        "Redis storage: how long to wait to connect, and for each answer, before a 503; a Redis node that "
        "let it pass gets no more calls (503 at once) until it answers a probe again",
        _duration_text,
    ),
    Setting(
        "RINGSUM_MAX_IDEMPOTENCY_KEYS",
        "max_idempotency_keys",
        "250000",
        _whole_number,
        "a whole number of idempotency keys, at least 1",
        "memory storage: Idempotency-Key values remembered at once (about 340 B each, each for the window "
        "and one tick); a write with one more is a 507",
    ),
    Setting(
        "RINGSUM_ACCESS_LOG",
        "access_log",
        "text",
        AccessLogMode,
        "off, text or json",
        "one line per request answered or refused, on standard output: text (the Common Log Format plus "
        "the seconds taken), json (one object a line), or off",
        _enum_text,
    ),
    Setting(
        "RINGSUM_LOG_FORMAT",
        "log_format",
        "text",
        LogFormat,
        "text or json",
        "every other log line (standard error): text, or json (one object a line: time, level, logger, message)",
        _enum_text,
    ),
    Setting(
        "RINGSUM_TRUSTED_PROXIES",
        "trusted_proxies",
        "",
        TrustedProxies.parse,
        "comma-separated IP addresses or networks, such as 127.0.0.1,10.0.0.0/8",
        "proxies whose X-Forwarded-For names the client in the access log; from anyone else it is ignored",
    ),
    Setting(
        "RINGSUM_EXPORT",
        "export",
        "",
        _export_prefixes,
        "comma-separated key prefixes such as api.,orders. (each 1-200 characters of A-Z a-z 0-9 _ . : -), "
        "or * for every key, or empty for none",
        "key prefixes (api.,orders.) or * whose window sums /metrics exports as ringsum_window_sum{key=...}, "
        "one series per live key; empty = none",
        _export_text,
    ),
    Setting(
        "RINGSUM_EXPORT_MAX_KEYS",
        "export_max_keys",
        "1000",
        _whole_number,
        "a whole number of keys, at least 1",
        "ringsum_window_sum series at most, the first keys in key order; ringsum_window_sum_keys_dropped "
        "counts the rest",
    ),
    Setting(
        "RINGSUM_CORS_ORIGINS",
        "cors_origins",
        "",
        _origins,
        "comma-separated origins, such as https://app.example.com,http://localhost:3000",
        "origins (scheme://host[:port], comma-separated) whose pages may call the API from a browser (CORS); "
        "unset = none",
        _origins_text,
    ),
)

DEFAULTS: dict[str, str] = {setting.name: setting.default for setting in SETTINGS}

# Settings an earlier release read: refused, so an upgrade never ignores one silently.
RETIRED: dict[str, str] = {
    "RINGSUM_SNAPSHOT_PATH": "0.2 keeps a write-ahead log and snapshots in RINGSUM_DATA_DIR instead "
    "(its 0.1 snapshot is not read); unset it (see CHANGELOG.md)",
}


def read_settings(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] = os.environ) -> Settings:
    """Read and validate every RINGSUM_* setting, overrides first, then the environment,
    then defaults; ConfigError names the first bad one. The storage URI is only read
    here: ``load_settings`` has its backend check it."""
    raw = {name: (overrides or {}).get(name, environ.get(name, default)) for name, default in DEFAULTS.items()}
    for name, successor in RETIRED.items():
        if (overrides or {}).get(name) or environ.get(name):
            raise ConfigError(name, (overrides or {}).get(name) or environ[name], f"nothing any more: {successor}")
    values = {setting.field: setting.read(raw[setting.name]) for setting in SETTINGS}
    window, resolution = values["window_us"], values["resolution_us"]
    if resolution and (resolution > window or window % resolution):
        raise ConfigError(
            "RINGSUM_RESOLUTION",
            raw["RINGSUM_RESOLUTION"],
            f"a duration that divides RINGSUM_WINDOW ({format_duration(window)}) into whole ticks, or 0 for exact mode",
        )
    return Settings(**values)


def settings_help() -> str:
    """The settings as ``python app.py --help`` lists them."""
    width = max(len(setting.name) for setting in SETTINGS)
    lines = ["settings (environment variables; a duration is 90s, 15m, 1h, ...):"]
    for setting in SETTINGS:
        default = setting.default if setting.default else "unset"
        lines.append(f"  {setting.name:<{width}}  {setting.meaning} (default: {default})")
    return "\n".join(lines)


def storage_options(**fields: Any) -> StorageOptions:
    """The default settings' storage options with ``fields`` changed, for a storage built
    by hand (tests, benchmarks): the defaults stay the table's, but such a storage keeps
    nothing unless given a ``data_dir``."""
    defaults = read_settings({"RINGSUM_DATA_DIR": ""}, environ={}).storage_options()
    return replace(defaults, **fields)


def load_settings(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] = os.environ) -> Settings:
    """Every RINGSUM_* setting read and checked, the storage URI by the backend it names
    (without connecting); ConfigError names the first bad one, with no password."""
    settings = read_settings(overrides, environ)
    try:
        check_uri(settings.storage_uri)
    except ValueError as error:
        raise ConfigError("RINGSUM_STORAGE_URI", shown_uri(settings.storage_uri), str(error)) from None
    return settings
