"""Redis storage: many processes and hosts share one window.

Every operation is one Lua script (``lua/*.lua``), so it is atomic and one round
trip; the scripts read the Redis server's clock (``TIME``), so app hosts whose
clocks disagree still agree on the window. A metric key ``K`` lives in
``ringsum:{K}:h`` and ``ringsum:{K}:z``: the ``{K}`` hash tag keeps both on one
Cluster slot, and a TTL of window + one tick lets idle keys vanish without a sweep.

Listing reads ``ringsum:index``, a sorted set of key names in byte order (all scored
0, read with ZRANGE BYLEX). A key joins it when a record creates it: inside the record
script on a single Redis; with a follow-up ZADD on Cluster, where the index sits in
its own slot. Members whose key expired by TTL stay until a listing meets them and
prunes them (at most ``_PRUNE_BUDGET`` per request). ``stats()`` counts keys and
entries one SCAN step per scrape and re-adds any key the index lacks (a follow-up
lost to a crash, data written by an older ringsum).

URIs as the ``limits`` library reads them: ``redis://[user:password@]host:port/db``,
``rediss://...`` (TLS), ``redis+cluster://[user:password@]host:port[,host:port...]``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.connection import parse_url
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.retry import Retry

from ..units import ceil_div
from ..window import RollingSum
from . import redacted_uri
from .base import (
    IdempotencyKeyReused,
    KeyLimitReached,
    KeyPage,
    Marker,
    Series,
    Storage,
    StorageIncompatible,
    StorageStats,
    StorageUnavailable,
    SumOutOfRange,
)

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

NAMESPACE = "ringsum:"
# The key layout (described in the module docstring), recorded in Redis itself so that a
# newer layout is refused rather than misread; see _check_layout.
LAYOUT_KEY, LAYOUT_VERSION = f"{NAMESPACE}layout", 1
_HASH, _SLOTS, _MARKER = "}:h", "}:z", "}:i:"
_SCRIPTS = Path(__file__).with_name("lua")
_SCRIPT_NAMES = ("record", "totals", "entries", "claim")
INDEX = "ringsum:index"
_CENSUS_STEP = 2000  # Redis keys SCAN looks at per node per /metrics scrape (2 per metric key)
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
_NOT_RUN = (NoScriptError, AskError, TryAgainError)


def hash_key(key: str) -> str:
    return f"{NAMESPACE}{{{key}{_HASH}"


def slots_key(key: str) -> str:
    return f"{NAMESPACE}{{{key}{_SLOTS}"


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


def _redis_keys(keys: Sequence[str]) -> list[str]:
    return [name for key in keys for name in (hash_key(key), slots_key(key))]


# -- URIs ----------------------------------------------------------------------------


def _cluster_options(uri: str) -> tuple[list[ClusterNode], dict[str, Any]]:
    """Startup nodes and client options of ``redis+cluster://[auth@]h1:p1[,h2:p2]/?opts``."""
    parts = urlsplit(uri)
    credentials, _, hosts = parts.netloc.rpartition("@")
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError("Redis Cluster has no databases other than 0: drop the /db part")
    nodes = []
    for location in hosts.split(","):
        host, _, port = location.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{location!r} is not host:port")
        nodes.append(ClusterNode(host, int(port)))
    # redis-py reads credentials and ?options the same way for every scheme.
    auth = f"{credentials}@" if credentials else ""
    options = parse_url(f"redis://{auth}{nodes[0].host}:{nodes[0].port}?{parts.query}")
    for name in ("host", "port", "db"):
        options.pop(name, None)
    return nodes, options


def check_uri(uri: str) -> None:
    """Raise ValueError when ``uri`` cannot work, without connecting to anything."""
    try:
        if uri.startswith("redis+cluster://"):
            _, options = _cluster_options(uri)
            redis.Connection(**options)  # refuses unknown ?options
        else:
            pool = redis.ConnectionPool.from_url(uri)
            pool.connection_class(**pool.connection_kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(str(error) or type(error).__name__) from None


def _client_for(uri: str, timeout_s: float) -> redis.Redis | RedisCluster:
    """A client that has not connected yet (a Cluster client reads the topology).

    No automatic retry: a command that timed out may have run, and running a record
    twice would count it twice. A failure is a 503, and the HTTP client retries.
    Options in the URI win over these defaults.
    """
    options: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    options["client_name"] = "ringsum"
    if uri.startswith("redis+cluster://"):
        nodes, uri_options = _cluster_options(uri)
        return RedisCluster(startup_nodes=nodes, retry=Retry(NoBackoff(), 0), **{**options, **uri_options})
    return redis.Redis.from_url(uri, retry=Retry(NoBackoff(), 0), **options)


# -- the storage ---------------------------------------------------------------------


class RedisStorage(Storage):
    """The storage interface on Redis or Redis Cluster; see the module docstring."""

    def __init__(self, settings: Settings, clock: Callable[[], int] | None = None) -> None:
        check_uri(settings.storage_uri)
        self._uri = settings.storage_uri
        self._cluster = self._uri.startswith("redis+cluster://")
        self._timeout_s = settings.redis_timeout_us / 1_000_000
        self._window_us = settings.window_us
        self._resolution_us = settings.resolution_us
        self._slot_us = settings.slot_us
        self._span = settings.window_us // settings.slot_us
        # Window + one tick, in whole ms rounded up, and 1 ms more: PEXPIRE counts from
        # the server's millisecond, which may be up to 1 ms before the recording µs.
        self._ttl_ms = str(ceil_div(settings.window_us + settings.slot_us, 1000) + 1)
        self._clock = clock
        self._lock = threading.Lock()
        self._client: redis.Redis | RedisCluster | None = None
        self._scripts: dict[str, Script] = {}
        self._warned_at = -_WARN_EVERY_S
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
        return self._record({key: value}, marker)

    def record_many(self, events: Sequence[tuple[str, int]], marker: Marker | None = None) -> Marker | None:
        """One script per Redis node: atomic on a single Redis, per hash slot on Cluster.

        With a marker on Cluster, each slot's script keeps its own copy of it, so a
        batch cut short (a 503 after some slots ran) and retried records exactly the
        slots that had not run; the retry's answer is then not marked replayed,
        since part of it was recorded just now.
        """
        summed: dict[str, int] = defaultdict(int)
        for key, value in events:
            summed[key] += value  # same key, same moment: the slot merges them anyway
        return self._record(summed, marker)

    def total(self, key: str, window_us: int | None = None) -> int:
        if window_us is not None and ceil_div(window_us, self._slot_us) < self._span:
            now, rolling = self._entries(key)
            return rolling.total(now, window_us)
        return self._totals([key]).get(key, 0)

    def series(self, key: str, step_us: int) -> Series:
        now, rolling = self._entries(key)
        start_us, sums = rolling.series(now, step_us)
        return Series(start_us, step_us, sums)

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
            names = [name.decode() for name in batch]
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
            self._connect().delete(hash_key(key), slots_key(key))
        self._unindex([key])

    def ping(self) -> None:
        with self._errors():
            client = self._connect()
            if isinstance(client, RedisCluster):
                client.ping(target_nodes=RedisCluster.PRIMARIES)
            else:
                client.ping()

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
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- operations ------------------------------------------------------------

    def _record(self, values: dict[str, int], marker: Marker | None) -> Marker | None:
        """Record ``values``; with a marker, see Storage.record. Returns the marker held
        when every script found it (nothing was recorded), else None."""
        keys = list(values)
        packed = _packed(marker) if marker is not None else ""
        calls = [(part, [self._ttl_ms, packed, *(str(values[key]) for key in part)]) for part in self._partition(keys)]
        # On a single Redis the script adds the keys it creates to the index itself.
        more_keys: list[list[str]] = [[] if self._cluster else [INDEX] for _ in calls]
        claimed = False
        if marker is not None:
            claimed = self._cluster and self._claim(marker)
            for (part, _), extra in zip(calls, more_keys, strict=True):
                extra.append(marker_key(marker.id, part[0] if self._cluster else None))
        try:
            results = self._run("record", calls, more_keys)
        except (ResponseError, KeyLimitReached) as error:
            if claimed and len(calls) == 1:  # refused, nothing recorded: the id is free again
                self._unclaim(marker)
            if isinstance(error, KeyLimitReached) or not str(error).startswith("RINGSUM_RANGE"):
                raise
            recorded = "for that key (other keys of the batch may be)" if self._cluster else "at all"
            raise SumOutOfRange(
                f"this would take a sum past what Redis adds exactly (±9.2e18, int64); nothing was recorded {recorded}"
            ) from None
        written = [(part, result) for (part, _), result in zip(calls, results, strict=True) if isinstance(result, list)]
        self._count_evictions(sum(evicted for _, (evicted, *_) in written))
        if self._cluster:
            created = [part[position - 1] for part, (_, *positions) in written for position in positions]
            if created:
                self._index(created)
        if marker is None or len(written) == len(results):
            return None
        held = [_unpacked(marker.id, result) for result in results if isinstance(result, bytes)]
        if any(found.fingerprint != marker.fingerprint for found in held):
            raise IdempotencyKeyReused(marker.id)
        return held[0] if not written else None  # some slots written now: a partial Cluster batch completed

    def _claim(self, marker: Marker) -> bool:
        """Bind ``marker.id`` to its fingerprint (Cluster). True when this request bound
        it; raises IdempotencyKeyReused when another request had."""
        (bound,) = self._run_prepared("claim", [([marker_key(marker.id)], [self._ttl_ms, marker.fingerprint])])
        if bound is not None and bound != marker.fingerprint:
            raise IdempotencyKeyReused(marker.id)
        return bound is None

    def _unclaim(self, marker: Marker) -> None:
        """Free the id again after a refused write; at worst (Redis just went away) the
        id stays bound to this request for the window."""
        with contextlib.suppress(StorageUnavailable), self._errors():
            self._connect().delete(marker_key(marker.id))

    def _totals(self, keys: list[str]) -> dict[str, int]:
        """The total of each key that holds something, after ageing out."""
        calls = [(part, []) for part in self._partition(keys)]
        totals: dict[str, int] = {}
        evicted = 0
        for (part, _), (dropped, *values) in zip(calls, self._run("totals", calls), strict=True):
            evicted += dropped
            totals.update((key, int(value)) for key, value in zip(part, values, strict=True) if value != b"")
        self._count_evictions(evicted)
        return totals

    def _entries(self, key: str) -> tuple[int, RollingSum]:
        """Now (µs, by the script's clock) and the key's live entries as a RollingSum,
        so sub-window sums and series are computed by the very code memory uses."""
        (dropped, now, *pairs) = self._run("entries", [([key], [])])[0]
        self._count_evictions(dropped)
        rolling = RollingSum(self._window_us, self._resolution_us)
        for slot, subtotal in zip(pairs[::2], pairs[1::2], strict=True):
            rolling.add(int(subtotal), int(slot) * self._slot_us)
        return int(now), rolling

    def _index(self, keys: list[str]) -> None:
        """The follow-up on Cluster: keys a record created join the index. The value is
        recorded already, so a failure here is logged, not answered with a 503 that
        the client would retry (counting twice); the next census re-adds the keys."""
        try:
            with self._errors():
                self._connect().zadd(INDEX, dict.fromkeys(keys, 0))
        except StorageUnavailable:
            log.warning("%d new keys not yet in the listing index; the census adds them", len(keys))

    def _unindex(self, keys: list[str]) -> None:
        """Take keys off the index, then put back those a writer created meanwhile:
        the index and a key may sit on different Cluster nodes, where no script can
        check one and change the other atomically, so check after removing."""
        with self._errors():
            client = self._connect()
            client.zrem(INDEX, *keys)
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.exists(slots_key(key))
            recreated = [key for key, held in zip(keys, pipe.execute(), strict=True) if held]
            if recreated:
                client.zadd(INDEX, dict.fromkeys(recreated, 0))

    def _census(self, node: redis.Redis, cursor: int) -> tuple[int, int, int]:
        """One SCAN step on one node: the next cursor (0: done), the keys it found and
        their entries. Keys found join the index if they are not in it (ZADD NX)."""
        cursor, found = node.scan(cursor, match=f"{NAMESPACE}{{*{_SLOTS}", count=_CENSUS_STEP)
        names = list(dict.fromkeys(found))
        if not names:
            return cursor, 0, 0
        pipe = node.pipeline(transaction=False)
        for name in names:
            pipe.zcard(name)
        entries = sum(pipe.execute())
        start, end = len(NAMESPACE) + 1, -len(_SLOTS)
        self._connect().zadd(INDEX, {name[start:end].decode(): 0 for name in names}, nx=True)
        return cursor, len(names), entries

    def _count_evictions(self, count: int) -> None:
        if count:
            with self._lock:
                self.evictions += count

    # -- running scripts -------------------------------------------------------

    def _run(
        self, name: str, calls: list[tuple[list[str], list[Any]]], more_keys: Sequence[Sequence[str]] | None = None
    ) -> list[Any]:
        """Run script ``name`` once per ``(metric keys, extra ARGV)`` call, with a call's
        ``more_keys`` after its KEYS; returns the results in order. Calls bound for one
        node go in one round trip."""
        more = more_keys or [()] * len(calls)
        return self._run_prepared(
            name, [([*_redis_keys(keys), *extra], tail) for (keys, tail), extra in zip(calls, more, strict=True)]
        )

    def _run_prepared(self, name: str, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run script ``name`` once per ``(Redis keys, extra ARGV)`` call."""
        with self._errors():
            client = self._connect()
            script = self._scripts[name]
            head = [str(self._slot_us), str(self._span), str(self._clock()) if self._clock else ""]
            prepared = [(keys, head + tail) for keys, tail in calls]
            if len(calls) == 1 or not isinstance(client, RedisCluster):
                return [script(keys, args) for keys, args in prepared]
            return self._run_per_node(client, script, prepared)

    def _run_per_node(
        self, cluster: RedisCluster, script: Script, calls: list[tuple[list[str], list[Any]]]
    ) -> list[Any]:
        by_node: dict[str, list[int]] = defaultdict(list)
        nodes: dict[str, ClusterNode] = {}
        for index, (keys, _) in enumerate(calls):
            node = cluster.get_node_from_key(keys[0])
            nodes[node.name] = node
            by_node[node.name].append(index)
        results: list[Any] = [None] * len(calls)
        for name, indexes in by_node.items():
            pipe = cluster.get_redis_connection(nodes[name]).pipeline(transaction=False)
            for index in indexes:
                keys, args = calls[index]
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            for index, result in zip(indexes, pipe.execute(raise_on_error=False), strict=True):
                if isinstance(result, _NOT_RUN):
                    # Not run (script flushed, slot moved): send it again the slow way,
                    # through the cluster client, which loads scripts and follows MOVED.
                    keys, args = calls[index]
                    result = script(keys, args)
                elif isinstance(result, Exception):
                    raise result
                results[index] = result
        return results

    def _partition(self, keys: list[str]) -> list[list[str]]:
        """Keys that one script may touch together: all of them on a single Redis,
        those of one hash slot on Cluster (a script must not cross slots)."""
        if not self._cluster:
            return [keys]
        by_slot: dict[int, list[str]] = defaultdict(list)
        for key in keys:
            by_slot[key_slot(key.encode())].append(key)
        return list(by_slot.values())

    def _nodes(self) -> Iterator[tuple[str, redis.Redis]]:
        """A name and a client per primary: the one Redis, or every Cluster primary."""
        client = self._connect()
        if isinstance(client, RedisCluster):
            for node in client.get_primaries():
                yield node.name, client.get_redis_connection(node)
        else:
            yield "redis", client

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
            redacted_uri(self._uri),
            found["appendonly"],
            found["appendfsync"],
            found["save"],
            advice,
        )

    def _connect(self) -> redis.Redis | RedisCluster:
        """The client, built on first use. A Cluster client reads the topology when it
        is built, so while the Cluster is down every request tries again."""
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                client = _client_for(self._uri, self._timeout_s)
                self._check_layout(client)
                self._scripts = {name: client.register_script(_script_text(name)) for name in _SCRIPT_NAMES}
                self._client = client
            return self._client

    def _check_layout(self, client: redis.Redis | RedisCluster) -> None:
        """Mark the keyspace with the key layout this ringsum writes (on first connection,
        one round trip), or refuse one written by a newer ringsum instead of misreading it."""
        found = client.set(LAYOUT_KEY, LAYOUT_VERSION, nx=True, get=True)
        if found is None or found == str(LAYOUT_VERSION).encode():
            return
        error = StorageIncompatible(
            f"Redis at {redacted_uri(self._uri)} holds ringsum's data in key layout {found.decode(errors='replace')!r} "
            f"({LAYOUT_KEY}), and this ringsum knows layout {LAYOUT_VERSION}: run a newer ringsum against it"
        )
        log.error("%s", error)
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
                log.warning("Redis at %s is unavailable: %s", redacted_uri(self._uri), error)
            reason = "timed out" if isinstance(error, redis.TimeoutError) else "is unreachable"
            raise StorageUnavailable(f"Redis {reason}") from error


def _script_text(name: str) -> str:
    return (_SCRIPTS / "common.lua").read_text() + "\n" + (_SCRIPTS / f"{name}.lua").read_text()
