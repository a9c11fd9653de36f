"""The storage interface every backend implements, and the errors it may raise."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Self


class StorageError(Exception):
    """Base of the errors the API turns into problem responses."""


class KeyLimitReached(StorageError):
    """Recording would hold more live keys than RINGSUM_MAX_KEYS (-> 507)."""


class SumOutOfRange(StorageError):
    """Recording would take a sum past what the backend adds exactly (-> 422)."""


class StorageUnavailable(StorageError):
    """The backend cannot be reached right now (-> 503 with Retry-After)."""


class NotDurable(StorageUnavailable):
    """The data dir cannot be trusted with a write right now (an fsync failed, it was
    deleted, replaced or cannot be written): writes are refused (-> 503 with
    Retry-After) until the storage has re-established durability on its own."""


class StorageIncompatible(StorageUnavailable):
    """The backend holds data in a layout this ringsum does not know (written by a newer
    one): refused rather than misread (-> 503 that says so)."""


class MarkerLimitReached(StorageError):
    """Remembering one more idempotency key would hold more than
    RINGSUM_MAX_IDEMPOTENCY_KEYS (-> 507); forgetting one inside the window instead
    would let its retry count twice."""


class IdempotencyKeyReused(StorageError):
    """The idempotency key was first used for another request (-> 422); nothing was recorded."""


@dataclass(frozen=True, slots=True)
class Marker:
    """What an ``Idempotency-Key`` remembers about the write it guards: the request it
    came with (a fingerprint) and the answer it got, to give that answer again to a retry.

    Only writes that succeed leave a marker: a refused one recorded nothing, so its
    retry is simply processed again.
    """

    id: str  # the Idempotency-Key header, 1-255 visible ASCII characters
    fingerprint: bytes  # SHA-256 of the request's method, path and body
    status: int
    body: bytes


class DataDirError(Exception):
    """The data dir cannot be used: the start stops with this one line (exit non-zero)."""


class DataDirInUse(DataDirError):
    """Another process holds the data dir's lock: one owner per data dir."""

    def __init__(self, path: object) -> None:
        super().__init__(f"the data dir {path} is in use by another ringsum process (it holds {path}/LOCK)")
        self.path = path


class UnsupportedDataFormat(DataDirError):
    """A file written by a newer ringsum: refused rather than misread."""

    def __init__(self, path: object, version: int, supported: int) -> None:
        super().__init__(
            f"{path} has format version {version}, and this ringsum reads up to version {supported}: "
            "run a newer ringsum on this data dir"
        )
        self.path = path


Clock = Callable[[], int]  # epoch µs; backends take one for tests


class FsyncMode(StrEnum):
    """As Redis's ``appendfsync``: when the log is forced to the disk."""

    ALWAYS = "always"  # before the write is acknowledged: survives power loss
    EVERYSEC = "everysec"  # by a background thread about once a second
    NO = "no"  # when the operating system decides


@dataclass(frozen=True)
class StorageOptions:
    """What a backend may be built with; each backend takes the options it uses and
    ignores the rest (Redis has no data dir, memory no connection timeout). No defaults
    here: they are the settings table's (``ringsum.config.storage_options()``)."""

    window_us: int
    resolution_us: int  # 0: exact mode
    max_keys: int  # memory
    max_idempotency_keys: int  # memory
    data_dir: str | None  # memory: None keeps nothing
    fsync: FsyncMode  # memory
    checkpoint_us: int  # memory
    redis_timeout_us: int  # Redis and Cluster

    @property
    def slot_us(self) -> int:
        """The unit every window, step and time is a multiple of (1 µs in exact mode)."""
        return self.resolution_us or 1


@dataclass(frozen=True)
class Series:
    """Step sums and (when asked for) counts, oldest first; ``start_us`` is the start of
    the first step. A count is None where the step holds values whose count is not known
    (recorded before ringsum kept counts: data dir format 1, Redis layout 1)."""

    start_us: int
    step_us: int
    sums: list[int]
    counts: list[int | None] | None = None  # None: not asked for


@dataclass(frozen=True)
class WindowStats:
    """A key's window (or a shorter one) summed and counted. ``count`` None: part of it
    was recorded before ringsum kept counts, and no count is made up for it."""

    sum: int
    count: int | None


@dataclass(frozen=True)
class KeyPage:
    """One page of a listing, sorted by key. ``next`` is the ``after`` that continues
    it (the last key looked at), None when no key can follow."""

    metrics: list[tuple[str, int]]
    next: str | None


@dataclass(frozen=True)
class StorageStats:
    """What /metrics reports about the data held. None: the backend cannot tell
    (Redis ages keys out by TTL, so it has no sweep and no eviction count)."""

    keys: int
    entries: int
    evictions: int | None = None  # window entries aged out since start
    sweep_seconds: float | None = None  # how long the last background sweep took
    idempotency_keys: int | None = None  # markers held (Redis: each one expires by its own TTL)
    durable: bool | None = None  # memory with a data dir: whether writes are trusted to it right now
    damaged_files: int | None = None  # memory with a data dir: *.damaged files kept in it


class Storage(ABC):
    """Rolling sums per key. Values are already-rounded integers; times come from the
    backend's own clock, so callers never pass one."""

    # What the server needs to know before it builds one: whether the data lives in the
    # serving process (so exactly one process may serve it), and whether it keeps a data
    # dir that needs one owner.
    single_process: ClassVar[bool] = False
    uses_data_dir: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def open(cls, uri: str, options: StorageOptions, *, clock: Clock | None = None, lock_timeout_s: float = 0) -> Self:
        """Build the backend ``uri`` names from the options it uses. ``clock`` (epoch µs)
        is for tests; ``lock_timeout_s`` is how long to wait for a data dir's lock."""

    @classmethod
    def check_uri(cls, uri: str) -> None:
        """Raise ValueError when this backend can tell, without connecting, that
        ``uri`` cannot work (memory:// always works)."""
        return None

    @classmethod
    def shown_uri(cls, uri: str) -> str:
        """``uri`` as logs and messages may show it (no secrets)."""
        return uri

    @abstractmethod
    def record(self, key: str, value: int, marker: Marker | None = None) -> Marker | None:
        """Record ``value`` for ``key``; with a ``marker``, in the same atomic step as
        remembering it (for the window and one tick).

        Returns None when the value was recorded now. When a live marker with the same
        id and fingerprint is held already, nothing is recorded and that marker is
        returned: the caller answers its outcome again. The same id with another
        fingerprint raises IdempotencyKeyReused; a full marker table MarkerLimitReached.
        """

    @abstractmethod
    def record_many(self, events: Sequence[tuple[str, int]], marker: Marker | None = None) -> Marker | None:
        """All or nothing: either every event is recorded or none is. ``marker``: as
        for ``record`` (on Cluster, atomic per hash slot: see RedisClusterStorage)."""

    @abstractmethod
    def total(self, key: str, window_us: int | None = None) -> int:
        """The sum over the window, or over a shorter one (a whole number of ticks)."""

    @abstractmethod
    def window_stats(self, key: str, window_us: int | None = None) -> WindowStats:
        """The sum and the number of values over the window, or a shorter one (as ``total``)."""

    @abstractmethod
    def series(self, key: str, step_us: int, with_counts: bool = False) -> Series:
        """The window in steps; ``with_counts``: each step's count of values too."""

    @abstractmethod
    def keys(self, prefix: str = "", limit: int = 1000, after: str = "") -> KeyPage:
        """Up to ``limit`` live keys starting with ``prefix`` and sorting after ``after``,
        sorted, with their sums. A cursor, not an offset: a key that stays live while a
        client pages is listed exactly once, whatever is added or expires meanwhile."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def ping(self) -> None:
        """Raise StorageUnavailable unless the backend answers."""

    @abstractmethod
    def stats(self) -> StorageStats: ...

    @abstractmethod
    def close(self) -> None:
        """Release resources; memory storage fsyncs its log and lets go of its data dir."""
