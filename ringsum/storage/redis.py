"""Redis storage: many processes and hosts share one window.

Every operation is one Lua script (``lua/*.lua``), so it is atomic and one round
trip; the scripts read the Redis server's clock (``TIME``), so app hosts whose
clocks disagree still agree on the window, never below the window's clock each
process keeps from it (clock.py; shared in ``ringsum:clock``), so it never runs back. A
metric key ``K`` lives in one string, ``ringsum:{K}:w`` (key layout 2,
``redis_layout.py``): a log of ``(slot, subtotal, count)`` entries while it holds few
slots, a ring of int64 subtotals and uint32 counts once busy. The ``{K}`` hash
tag keeps it on the Cluster slot of its markers, and a TTL of window + one tick lets
idle keys vanish without a sweep. Redis holding layout 1 (``ringsum:{K}:h`` and
``:z``) is refused with the command that converts it (``upgrade.py``).

Listing reads ``ringsum:index``, a sorted set of key names in byte order (all scored
0, read with ZRANGE BYLEX). A key joins it when a record creates it: inside the record
script on a single Redis; with a follow-up ZADD on Cluster, where the index sits in
its own slot. Members whose key expired by TTL stay until a listing meets them and
prunes them (at most ``_PRUNE_BUDGET`` per request). ``stats()`` counts keys and
entries one SCAN step per scrape and re-adds any key the index lacks (a follow-up
lost to a crash, data written by an older ringsum).

URIs as the ``limits`` library reads them: ``redis://[user:password@]host:port/db``,
``rediss://...`` (TLS). Cluster (``redis+cluster://``) is ``redis_cluster.py``: this
class with what differs overridden (hash slots, nodes, the index follow-up, the claim).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.connection import parse_url
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.retry import Retry

from ..core.clock import WindowClock, unsteered_monotonic_us
from ..core.said_once import server_wide
from ..core.units import ceil_div
from ..core.window import RollingSum
from . import redis_layout as layout
from .base import (
    Clock,
    IdempotencyKeyReused,
    KeyLimitReached,
    KeyPage,
    Marker,
    Series,
    Storage,
    StorageError,
    StorageIncompatible,
    StorageOptions,
    StorageStats,
    StorageUnavailable,
    SumOutOfRange,
    WindowStats,
)
from .breaker import Breakers, NodeStalled, guarded

log = logging.getLogger(__name__)

# The key layout (described in redis_layout.py), recorded in Redis itself so that
# another layout is refused rather than misread; see _check_layout.
NAMESPACE, LAYOUT_KEY, LAYOUT_VERSION = layout.NAMESPACE, layout.LAYOUT_KEY, layout.LAYOUT_VERSION
UPGRADE_COMMAND = "python -m ringsum.storage.upgrade"
_MARKER = "}:i:"
_SCRIPTS = Path(__file__).with_name("lua")
_SCRIPT_NAMES = ("record", "totals", "entries", "claim", "upgrade", "clock")
INDEX = "ringsum:index"
CLOCK_KEY = "ringsum:clock"  # the newest time the window's clock read, shared (lua/clock.lua)
CLOCK_SYNC_S = 1.0  # how often a process reads TIME and raises CLOCK_KEY
_CENSUS_STEP = 2000  # Redis keys SCAN looks at per node per /metrics scrape (1 per metric key)
# A key in tick mode becomes a ring of span + 1 cells (12 bytes each) once it holds more
# slots than this share of them, and a log of 16-byte pairs again at a quarter of it:
# chosen by measuring MEMORY USAGE (docs/footprint.md).
RING_SHARE = 8
_PRUNE_BUDGET = 5000  # index members of expired keys one listing may look past
_WARN_EVERY_S = 10.0

# Errors that mean "Redis cannot serve right now", as opposed to a bug: -> 503.
_UNAVAILABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterError,
    RedisClusterException,
    ReadOnlyError,  # a failover is in progress
    TryAgainError,
)
# A pipelined command that did not run, and may simply be sent again.
NOT_RUN = (NoScriptError, AskError, TryAgainError)


def ring_threshold(options: StorageOptions) -> int:
    """Slots a key holds at most before it becomes a ring; 0 in exact mode (never: a
    ring of one cell per microsecond of the window makes no sense)."""
    if not options.resolution_us:
        return 0
    return max(1, (options.window_us // options.slot_us + 1) // RING_SHARE)


def marker_key(marker_id: str, tag: str | None = None) -> str:
    """Where an idempotency marker lives: ``ringsum:i:<id>`` on a single Redis (one per
    id, so any two requests with that id meet there), and on Cluster
    ``ringsum:{K}:i:<id>``, on the slot of ``K``, a metric key of the write it guards
    (a script touches one slot only); there ``ringsum:i:<id>`` holds the claim. The id
    is written in hex: any characters it holds (braces, ``*``, a ``}:z`` ending) can
    then neither move its hash slot nor match the patterns that find metric keys."""
    encoded = marker_id.encode().hex()
    return f"{NAMESPACE}i:{encoded}" if tag is None else f"{NAMESPACE}{{{tag}{_MARKER}{encoded}"


def _packed(marker: Marker) -> bytes:
    """A marker as the record script stores it: fingerprint (32 bytes), status (3 digits), body."""
    return marker.fingerprint + b"%03d" % marker.status + marker.body


def _unpacked(marker_id: str, packed: bytes) -> Marker:
    return Marker(marker_id, packed[:32], int(packed[32:35]), packed[35:])


def _in_int64(values: dict[str, int]) -> dict[str, int]:
    """``values``, or SumOutOfRange when one (a batch's sum for a key) cannot be an int64:
    refused before any script runs, so nothing at all is recorded."""
    if any(not -layout.INT64_MAX <= value <= layout.INT64_MAX for value in values.values()):
        raise SumOutOfRange(
            "this would take a sum past what Redis adds exactly (±9.2e18, int64); nothing was recorded at all"
        )
    return values


# -- URIs ----------------------------------------------------------------------------


def redacted(uri: str) -> str:
    """``uri`` with its password masked, for messages and logs."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    credentials, _, hosts = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{credentials.partition(':')[0]}:***@{hosts}").geturl()


def refuse_retry(uri: str) -> None:
    """ValueError when ``uri`` asks for retries (``?retry=``), which would replace the
    no-retry policy of ``client_options``."""
    if "retry" in parse_qs(urlsplit(uri).query, keep_blank_values=True):
        raise ValueError(
            "?retry is not accepted: a record that timed out may have run, and a retry would count it twice"
        )


def client_options(timeout_s: float) -> dict[str, Any]:
    """Options of every client; options in the URI win over them.

    No automatic retry: a command that timed out may have run, and running a record
    twice would count it twice. A failure is a 503, and the HTTP client retries.
    """
    return {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "client_name": f"ringsum/layout{LAYOUT_VERSION}",  # told apart by the upgrade (upgrade.py)
        "retry": Retry(NoBackoff(), 0),
    }


# -- the storage ---------------------------------------------------------------------


class RedisStorage(Storage):
    """The storage interface on one Redis; see the module docstring."""

    # How much of a batch a refusal by the record script left unrecorded (one script: all of it).
    _UNRECORDED_ON_RANGE = "at all"
    # On a single Redis the record script joins the keys it creates to the listing index.
    _INDEX_IN_SCRIPT = True

    @classmethod
    def open(cls, uri: str, options: StorageOptions, *, clock: Clock | None = None, lock_timeout_s: float = 0) -> Self:
        return cls(uri, options, clock=clock)

    @classmethod
    def check_uri(cls, uri: str) -> None:
        refuse_retry(uri)
        try:
            pool = redis.ConnectionPool.from_url(uri)
            pool.connection_class(**pool.connection_kwargs)  # refuses unknown ?options
        except (TypeError, ValueError) as error:
            raise ValueError(str(error) or type(error).__name__) from None

    @classmethod
    def shown_uri(cls, uri: str) -> str:
        return redacted(uri)

    def __init__(
        self, uri: str, options: StorageOptions, *, clock: Clock | None = None, check_layout: bool = True
    ) -> None:
        """``check_layout=False`` is for the upgrade alone, which reads the layout it converts."""
        self.check_uri(uri)
        self._uri = uri
        self._timeout_s = options.redis_timeout_us / 1_000_000
        self._breakers = Breakers(self._timeout_s)  # a node that timed out fails at once (breaker.py)
        self._window_us = options.window_us
        self._resolution_us = options.resolution_us
        self._slot_us = options.slot_us
        self._span = options.window_us // options.slot_us
        self._ring_at = ring_threshold(options)
        # Window + one tick, in whole ms rounded up, and 1 ms more: PEXPIRE counts from
        # the server's millisecond, which may be up to 1 ms before the recording µs.
        self._ttl_ms = str(ceil_div(options.window_us + options.slot_us, 1000) + 1)
        # The window's clock, which never steps back (clock.py): the app's in tests; in
        # production the Redis server's TIME as last read (once a second), gone on from
        # by the monotonic clock, and handed to every script as a floor under TIME.
        self._window: WindowClock | None = WindowClock.of(clock) if clock else None
        self._given_clock = clock is not None
        self._redis_time = (0, 0)  # TIME (µs) as last read, and the monotonic µs it was read at
        self._clock_stop = threading.Event()
        self._lock = threading.Lock()
        self._client: redis.Redis | RedisCluster | None = None
        self._scripts: dict[str, Script] = {}
        self._warned_at = -_WARN_EVERY_S
        self._checks_layout = check_layout
        self._refusal_logged = False
        # The census behind stats(): nodes still to scan this pass (name -> cursor),
        # counts so far, and those of the last complete pass.
        self._census_lock = threading.Lock()
        self._census_cursors: dict[str, int] = {}
        self._census_running = (0, 0)
        self._census_counts: tuple[int, int] | None = None
        self.evictions = 0  # slots aged out by this process's requests, for /metrics
        threading.Thread(target=self._log_persistence, name="ringsum-redis-persistence", daemon=True).start()

    # -- the storage interface -------------------------------------------------

    def record(self, key: str, value: int, marker: Marker | None = None) -> Marker | None:
        return self._record(_in_int64({key: value}), {key: 1}, marker)

    def record_many(self, events: Sequence[tuple[str, int]], marker: Marker | None = None) -> Marker | None:
        """One script: atomic (per hash slot on Cluster, see RedisClusterStorage)."""
        summed: dict[str, int] = defaultdict(int)
        counts: dict[str, int] = defaultdict(int)
        for key, value in events:
            summed[key] += value  # same key, same moment: the slot merges them anyway
            counts[key] += 1  # but each event counts
        return self._record(_in_int64(summed), counts, marker)

    def total(self, key: str, window_us: int | None = None) -> int:
        if window_us is not None and ceil_div(window_us, self._slot_us) < self._span:
            now, rolling = self._entries(key)
            return rolling.total(now, window_us)
        return self._totals([key]).get(key, 0)

    def window_stats(self, key: str, window_us: int | None = None) -> WindowStats:
        """From the key's string, by the code memory uses: counts are summed when asked for."""
        now, rolling = self._entries(key)
        return WindowStats(*rolling.stats(now, window_us))

    def series(self, key: str, step_us: int, with_counts: bool = False) -> Series:
        now, rolling = self._entries(key)
        start_us, sums, counts = rolling.series(now, step_us, with_counts)
        return Series(start_us, step_us, sums, counts)

    def keys(self, prefix: str = "", limit: int = 1000, after: str = "") -> KeyPage:
        """Index members from the cursor on, checked live by the totals script. Past
        ``_PRUNE_BUDGET`` members of expired keys (pruned on the way), the page ends
        short, with ``next``: more may follow, and a request stays bounded."""
        low = f"({after}" if after >= prefix else f"[{prefix}"
        high = f"[{prefix}\x7f" if prefix else "+"  # every key character sorts below DEL
        found: list[tuple[str, int]] = []
        looked_at = 0
        while looked_at <= limit + _PRUNE_BUDGET:
            with self._errors():
                batch = self._connect().zrangebylex(INDEX, low, high, 0, limit + 1 - len(found))
            names = [name.decode() for name in batch]  # type: ignore[union-attr]  # bytes: no decode_responses
            if not names:
                return KeyPage(found, None)
            totals = self._totals(names)
            gone = [name for name in names if name not in totals]
            if gone:
                self._unindex(gone)
            found.extend((name, totals[name]) for name in names if name in totals)
            if len(found) > limit:  # one more than the page: a next page holds something
                return KeyPage(found[:limit], found[limit - 1][0])
            looked_at += len(names)
            low = f"({names[-1]}"
        return KeyPage(found, low[1:])

    def delete(self, key: str) -> None:
        with self._errors():
            self._connect().delete(layout.string_key(key))
        self._unindex([key])

    def ping(self) -> None:
        with self._errors():
            self._connect().ping()

    def stats(self) -> StorageStats:
        """Keys and entries Redis holds (idle keys count until their TTL ends) as of the
        last complete census, which advances one SCAN step per node per call, so a
        scrape never walks every key; and the entries this process's requests aged out
        (the TTL drops the rest unseen)."""
        with self._errors(), self._census_lock:
            nodes = dict(self._nodes())
            if not self._census_cursors:  # a new pass
                self._census_cursors = dict.fromkeys(nodes, 0)
                self._census_running = (0, 0)
            for name in list(self._census_cursors):
                node = nodes.get(name)
                cursor, keys, entries = (0, 0, 0) if node is None else self._census(node, self._census_cursors[name])
                self._census_running = (self._census_running[0] + keys, self._census_running[1] + entries)
                if cursor:
                    self._census_cursors[name] = cursor
                else:
                    del self._census_cursors[name]
            if not self._census_cursors:
                self._census_counts = self._census_running
            keys, entries = self._census_counts or self._census_running
        return StorageStats(keys=keys, entries=entries, evictions=self.evictions)

    def count(self) -> tuple[int, int]:
        """Keys and entries Redis holds now, by a walk of every key: for tests."""
        keys = entries = 0
        with self._errors():
            for _, node in self._nodes():
                cursor = None
                while cursor != 0:
                    cursor, step_keys, step_entries = self._census(node, cursor or 0)
                    keys, entries = keys + step_keys, entries + step_entries
        return keys, entries

    def close(self) -> None:
        self._breakers.stop()
        self._clock_stop.set()
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- operations ------------------------------------------------------------

    def _record(self, values: dict[str, int], counts: dict[str, int], marker: Marker | None) -> Marker | None:
        """Record ``values`` (each within int64), each the sum of ``counts`` values; with
        a marker, see Storage.record.
        Returns the marker held when every script found it (nothing was recorded), else None."""
        packed = _packed(marker) if marker is not None else ""
        parts = self._partition(list(values))
        index = "index" if self._INDEX_IN_SCRIPT else ""
        calls = [
            (
                [*map(layout.string_key, part), *([INDEX] if index else []), *self._marker_keys(part, marker)],
                [
                    self._ttl_ms,
                    packed,
                    str(len(part)),
                    index,
                    *(layout.packed_value(values[key], counts[key]) for key in part),
                ],
            )
            for part in parts
        ]
        try:
            results = self._run_prepared("record", calls)
        except ResponseError as error:
            if str(error).startswith("RINGSUM_RANGE"):
                raise SumOutOfRange(
                    "this would take a sum past what Redis adds exactly (±9.2e18, int64), or a tick's "
                    f"count past 4,294,967,295 values; nothing was recorded {self._UNRECORDED_ON_RANGE}"
                ) from None
            if str(error).startswith("RINGSUM_FULL"):
                raise KeyLimitReached(
                    "a key holds as many values in its window as one Redis string can (exact mode: about "
                    f"26 million); nothing was recorded {self._UNRECORDED_ON_RANGE}"
                ) from None
            raise
        written = [(part, result) for part, result in zip(parts, results, strict=True) if isinstance(result, list)]
        self._count_evictions(sum(evicted for _, (evicted, *_) in written))
        created = [part[position - 1] for part, (_, *positions) in written for position in positions]
        if created:
            self._created(created)
        if marker is None or len(written) == len(results):
            return None
        held = [_unpacked(marker.id, result) for result in results if isinstance(result, bytes)]
        if any(found.fingerprint != marker.fingerprint for found in held):
            raise IdempotencyKeyReused(marker.id)
        return held[0] if not written else None  # some slots written now: a partial Cluster batch completed

    def _marker_keys(self, part: list[str], marker: Marker | None) -> list[str]:
        """The marker's key, last of a record script's KEYS, when there is a marker."""
        return [] if marker is None else [marker_key(marker.id)]

    def _created(self, keys: list[str]) -> None:
        """Keys a record just created; the script put them in the index already."""

    def _totals(self, keys: list[str]) -> dict[str, int]:
        """The total of each key that holds something, after ageing out."""
        calls: list[tuple[list[str], list[Any]]] = [(part, []) for part in self._partition(keys)]
        totals: dict[str, int] = {}
        evicted = 0
        for (part, _), (dropped, *values) in zip(calls, self._run("totals", calls), strict=True):
            evicted += dropped
            totals.update((key, layout.total(value)) for key, value in zip(part, values, strict=True) if value)
        self._count_evictions(evicted)
        return totals

    def _entries(self, key: str) -> tuple[int, RollingSum]:
        """Now (µs, by the script's clock) and the key's live entries as a RollingSum,
        so sub-window sums and series are computed by the very code memory uses."""
        (dropped, now, string) = self._run("entries", [([key], [])])[0]
        self._count_evictions(dropped)
        rolling = RollingSum(self._window_us, self._resolution_us)
        for slot, subtotal, count in layout.entries(string):
            rolling.add(subtotal, slot * self._slot_us, count)
        return int(now), rolling

    def _unindex(self, keys: list[str]) -> None:
        """Take keys off the index, then put back those a writer created meanwhile:
        the index and a key may sit on different Cluster nodes, where no script can
        check one and change the other atomically, so check after removing."""
        with self._errors():
            client = self._connect()
            client.zrem(INDEX, *keys)
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.exists(layout.string_key(key))
            recreated = [key for key, held in zip(keys, pipe.execute(), strict=True) if held]
            if recreated:
                client.zadd(INDEX, dict.fromkeys(recreated, 0))

    def _census(self, node: redis.Redis | RedisCluster, cursor: int) -> tuple[int, int, int]:
        """One SCAN step on one node: the next cursor (0: done), the keys it found and
        their entries. Keys found join the index if they are not in it (ZADD NX)."""
        cursor, found = node.scan(cursor, match=f"{NAMESPACE}{{*{layout.STRING_SUFFIX}", count=_CENSUS_STEP)
        names = list(dict.fromkeys(found))
        if not names:
            return cursor, 0, 0
        pipe = node.pipeline(transaction=False)
        for name in names:
            pipe.getrange(name, *layout.COUNT_RANGE)
        entries = sum(map(layout.slots_held, pipe.execute()))
        self._connect().zadd(INDEX, dict.fromkeys(map(layout.metric_key, names), 0), nx=True)
        return cursor, len(names), entries

    def _count_evictions(self, count: int) -> None:
        if count:
            with self._lock:
                self.evictions += count

    # -- running scripts -------------------------------------------------------

    def _run(self, name: str, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run script ``name`` once per ``(metric keys, extra ARGV)`` call, with the
        keys' strings as its KEYS; returns the results in order."""
        return self._run_prepared(name, [(list(map(layout.string_key, keys)), tail) for keys, tail in calls])

    def _run_prepared(self, name: str, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run script ``name`` once per ``(Redis keys, extra ARGV)`` call, after the
        ARGV every script takes first (common.lua). Calls bound for one node go in one
        round trip."""
        with self._errors():
            client = self._connect()
            script = self._scripts[name]
            head = [str(self._slot_us), str(self._span), self._now_argument(), str(self._ring_at)]
            prepared = [(keys, head + tail) for keys, tail in calls]
            return self._execute(client, script, prepared)

    def _now_argument(self) -> str:
        """ARGV[3] of every script (common.lua): the test's clock exactly; in production
        the window's clock as a floor under TIME, once it was read."""
        window = self._window
        if window is None:
            return ""
        return str(window()) if self._given_clock else f">{window()}"

    def _redis_wall(self) -> int:
        """Redis's TIME now, as told by the last one read and the monotonic clock since."""
        time_us, read_at = self._redis_time
        return time_us + unsteered_monotonic_us() - read_at

    def _sync_clock(self) -> None:
        """Read TIME (a step of the Redis clock shows here, and the window's clock keeps
        it as lead rather than going back), raise CLOCK_KEY to the window's time, and go
        on from the newest time any process read. Failures wait for the next try."""
        try:
            (time_us, held) = self._run_prepared("clock", [([CLOCK_KEY], [])])[0]
        except (StorageError, redis.RedisError):  # said by the request that meets it
            return
        # Counted from the answer's arrival, TIME as read is a little behind TIME now (a
        # slow answer only looks like a small step back, kept as lead until a quicker
        # one): a floor at or under TIME, except after TIME stepped back.
        self._redis_time = (int(time_us), unsteered_monotonic_us())
        if self._window is None:
            self._window = WindowClock(self._redis_wall, unsteered_monotonic_us)
        self._window.raise_floor(int(held))

    def _keep_clock(self) -> None:
        while not self._clock_stop.wait(CLOCK_SYNC_S):
            try:
                self._sync_clock()
            except Exception:  # the clock must go on whatever one try raised
                log.exception("reading the Redis clock failed")

    def _execute(self, client: Any, script: Script, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        return [script(keys, args) for keys, args in calls]

    def _partition(self, keys: list[str]) -> list[list[str]]:
        """Keys that one script may touch together: on one Redis, all of them."""
        return [keys]

    def _nodes(self) -> Iterator[tuple[str, redis.Redis | RedisCluster]]:
        """A name and a client per primary: here, the one Redis."""
        yield "redis", self._connect()

    # -- connection and errors -------------------------------------------------

    def _log_persistence(self) -> None:
        """Say at start how durable the data is: as durable as the Redis behind it. Off
        the start path (Redis may be down); silent when CONFIG is not allowed."""
        try:
            _, node = next(self._nodes())
            found = {name: node.config_get(name).get(name, "?") for name in ("appendonly", "appendfsync", "save")}
        except Exception:  # informational only: Redis down, CONFIG refused, the storage closed meanwhile
            return
        advice = "" if found["appendonly"] == "yes" else "; set appendonly yes so a Redis restart loses nothing"
        log.info(
            "Redis persistence at %s: appendonly %s (appendfsync %s), save %r%s",
            redacted(self._uri),
            found["appendonly"],
            found["appendfsync"],
            found["save"],
            advice,
            extra=server_wide(),  # every worker finds the same: said once
        )

    def _connect(self) -> redis.Redis | RedisCluster:
        """The client, built on first use. A Cluster client reads the topology when it
        is built, so while the Cluster is down every request tries again."""
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is not None:
                return self._client
            client = self._new_client()
            if self._checks_layout:
                self._check_layout(client)
            self._scripts = {name: client.register_script(_script_text(name)) for name in _SCRIPT_NAMES}
            self._client = client
        # The window's clock from the first request on, kept once a second from then
        # (not with a test's clock: that one is the test's to move).
        if not self._given_clock:
            self._sync_clock()
            threading.Thread(target=self._keep_clock, name="ringsum-redis-clock", daemon=True).start()
        return client

    def _new_client(self) -> redis.Redis | RedisCluster:
        """A client that has not connected yet, its connections behind the breaker."""
        base = parse_url(self._uri).get("connection_class", redis.Connection)  # TLS, a socket path
        connection_class = guarded(base, self._breakers)
        return redis.Redis.from_url(self._uri, **client_options(self._timeout_s), connection_class=connection_class)

    def _check_layout(self, client: redis.Redis | RedisCluster) -> None:
        """Mark the keyspace with the key layout this ringsum writes (on first connection,
        one round trip), or refuse another instead of misreading it: an older one with
        the command that upgrades it, a newer one written by a newer ringsum. The log
        says so once; every request answers a 503 that says so."""
        found = client.set(LAYOUT_KEY, LAYOUT_VERSION, nx=True, get=True)
        if found is None or found == str(LAYOUT_VERSION).encode():
            return
        shown = found.decode(errors="replace")  # type: ignore[union-attr]  # bytes: no decode_responses
        if shown.isdigit() and int(shown) < LAYOUT_VERSION:
            advice = (
                f"this ringsum uses layout {LAYOUT_VERSION}: stop every ringsum using this Redis, then run "
                f"`{UPGRADE_COMMAND}` with their RINGSUM_* settings"
            )
        else:
            advice = f"this ringsum knows layout {LAYOUT_VERSION}: run a newer ringsum against it"
        error = StorageIncompatible(
            f"Redis at {redacted(self._uri)} holds ringsum's data in key layout {shown!r} ({LAYOUT_KEY}), and {advice}"
        )
        if not self._refusal_logged:
            self._refusal_logged = True
            log.error("%s", error, extra=server_wide())
        raise error

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn "Redis cannot answer" into StorageUnavailable (a 503). The log says so
        at most every few seconds, not once per failed request."""
        try:
            yield
        except OutOfMemoryError as error:
            raise KeyLimitReached("Redis is full (maxmemory)") from error
        except _UNAVAILABLE as error:
            now = time.monotonic()
            if now - self._warned_at >= _WARN_EVERY_S:
                self._warned_at = now
                log.warning(
                    "Redis at %s is unavailable: %s", redacted(self._uri), error, extra=server_wide(_WARN_EVERY_S)
                )
            if isinstance(error, NodeStalled):
                raise StorageUnavailable(str(error)) from error
            if isinstance(error, redis.TimeoutError):
                reason = "timed out"
            elif isinstance(error, ClusterDownError):  # see cluster-require-full-coverage in the README
                reason = "Cluster says it is down (a shard without its primary)"
            else:
                reason = "is unreachable"
            raise StorageUnavailable(f"Redis {reason}") from error


def _script_text(name: str) -> str:
    return (_SCRIPTS / "common.lua").read_text() + "\n" + (_SCRIPTS / f"{name}.lua").read_text()
