"""Redis Cluster storage: RedisStorage with what a Cluster changes overridden.

A script must not cross hash slots, so a batch runs as one script per slot, pipelined
per node: atomic per slot, not as a whole. The listing index sits in its own slot, so
keys a record creates join it with a follow-up ZADD. An idempotency marker is kept by
each slot's script, on that slot, and a claim key (``ringsum:i:<id>``) binds the id to
one request first, so two different requests can never both write under it.

URIs as the ``limits`` library reads them:
``redis+cluster://[user:password@]host:port[,host:port...]``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.connection import parse_url
from redis.crc import key_slot
from redis.exceptions import NoScriptError, ResponseError

from .base import IdempotencyKeyReused, KeyLimitReached, Marker, StorageUnavailable, SumOutOfRange
from .breaker import guarded
from .redis import _UNAVAILABLE, _WARN_EVERY_S, INDEX, NOT_RUN, RedisStorage, client_options, marker_key, refuse_retry

log = logging.getLogger(__name__)

REFRESH_EVERY_S = 0.5  # how often the slots are read again while a primary is stalled, at most


def cluster_options(uri: str) -> tuple[list[ClusterNode], dict[str, Any]]:
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


class RedisClusterStorage(RedisStorage):
    """The storage interface on Redis Cluster; see the module docstring."""

    _UNRECORDED_ON_RANGE = "for that key (other keys of the batch may be)"
    _INDEX_IN_SCRIPT = False  # the index lives in another slot: keys a record creates join it in _created
    _refreshed_at = -REFRESH_EVERY_S  # when the slots were last read again for a stalled node
    _unindexed = 0  # new keys left to the census since the last line that said so
    _unindexed_said_at = -_WARN_EVERY_S

    @classmethod
    def check_uri(cls, uri: str) -> None:
        refuse_retry(uri)
        try:
            _, options = cluster_options(uri)
            redis.Connection(**options)  # refuses unknown ?options
        except (TypeError, ValueError) as error:
            raise ValueError(str(error) or type(error).__name__) from None

    def ping(self) -> None:
        with self._errors():
            self._connect().ping(target_nodes=RedisCluster.PRIMARIES)

    def _new_client(self) -> RedisCluster:
        """A client that has read the topology, not yet connected to each node; every
        node's connections behind its own breaker. (Given as ``url``, the first node
        makes redis-py build node pools that take a connection class.)"""
        (first, *others), uri_options = cluster_options(self._uri)
        return RedisCluster(
            url=f"redis://{first.host}:{first.port}",
            startup_nodes=others,
            connection_class=guarded(redis.Connection, self._breakers),
            **{**client_options(self._timeout_s), **uri_options},
        )

    # -- writes ------------------------------------------------------------------

    def _record(self, values: dict[str, int], counts: dict[str, int], marker: Marker | None) -> Marker | None:
        """With a marker, each slot's script keeps its own copy of it, so a batch cut
        short (a 503 after some slots ran) and retried records exactly the slots that
        had not run; the retry's answer is then not marked replayed, since part of it
        was recorded just now."""
        claimed = marker is not None and self._claim(marker)
        try:
            return super()._record(values, counts, marker)
        except (ResponseError, KeyLimitReached, SumOutOfRange):
            if claimed and len(self._partition(list(values))) == 1:  # refused, nothing recorded
                self._unclaim(marker)  # type: ignore[arg-type]
            raise

    def _marker_keys(self, part: list[str], marker: Marker | None) -> list[str]:
        """The marker's key on the slot of the part's first metric key."""
        return [] if marker is None else [marker_key(marker.id, part[0])]

    def _created(self, keys: list[str]) -> None:
        """The follow-up: keys a record created join the index. The value is recorded
        already, so a failure here is logged, not answered with a 503 that the client
        would retry (counting twice); the next census re-adds the keys."""
        try:
            with self._errors():
                cluster: RedisCluster = self._connect()  # type: ignore[assignment]  # _new_client made one
                # The index's node stalled: skip it at once (no wait, no slots read again).
                self._breakers.check(cluster.get_node_from_key(INDEX).name)
                cluster.zadd(INDEX, dict.fromkeys(keys, 0))
        except StorageUnavailable:
            self._unindexed += len(keys)
            now = time.monotonic()
            if now - self._unindexed_said_at >= _WARN_EVERY_S:  # a line every few seconds, not per request
                log.warning("%d new keys not yet in the listing index; the census adds them", self._unindexed)
                self._unindexed, self._unindexed_said_at = 0, now

    def _claim(self, marker: Marker) -> bool:
        """Bind ``marker.id`` to its fingerprint. True when this request bound it;
        raises IdempotencyKeyReused when another request had."""
        (bound,) = self._run_prepared("claim", [([marker_key(marker.id)], [self._ttl_ms, marker.fingerprint])])
        if bound is not None and bound != marker.fingerprint:
            raise IdempotencyKeyReused(marker.id)
        return bound is None

    def _unclaim(self, marker: Marker) -> None:
        """Free the id again after a refused write; at worst (Redis just went away) the
        id stays bound to this request for the window."""
        with contextlib.suppress(StorageUnavailable), self._errors():
            self._connect().delete(marker_key(marker.id))

    # -- slots and nodes ---------------------------------------------------------

    def _refresh_topology(self, cluster: RedisCluster) -> None:
        """Read which node serves which slots again (CLUSTER SLOTS from a node that
        answers), at most every REFRESH_EVERY_S: how requests for a stalled primary's
        keys find the replica that took over from it."""
        now = time.monotonic()
        if now - self._refreshed_at < REFRESH_EVERY_S:
            return
        self._refreshed_at = now
        with contextlib.suppress(*_UNAVAILABLE):
            cluster.nodes_manager.initialize()

    def _partition(self, keys: list[str]) -> list[list[str]]:
        """Those of one hash slot together: a script must not cross slots."""
        by_slot: dict[int, list[str]] = defaultdict(list)
        for key in keys:
            by_slot[key_slot(key.encode())].append(key)
        return list(by_slot.values())

    def _nodes(self) -> Iterator[tuple[str, redis.Redis]]:
        """A name and a client per primary."""
        cluster: RedisCluster = self._connect()  # type: ignore[assignment]  # _new_client made one
        for node in cluster.get_primaries():
            yield node.name, cluster.get_redis_connection(node)

    def _execute(self, cluster: RedisCluster, script: Script, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Several calls: one pipeline per node, so a batch costs a round trip per node,
        not per slot."""
        nodes, by_node = _by_node(cluster, calls)
        if any(name in self._breakers.open for name in by_node):
            # A stalled node: a failover may have given its slots to a replica since.
            self._refresh_topology(cluster)
            nodes, by_node = _by_node(cluster, calls)
        for name in by_node:
            # Still there: fail here, before redis-py would take the failure for a
            # topology change and read the slots again on every such request.
            self._breakers.check(name)
        if len(calls) == 1:
            return [_on_its_node(cluster, script, *calls[0])]
        results: list[Any] = [None] * len(calls)
        for name, indexes in by_node.items():
            pipe = cluster.get_redis_connection(nodes[name]).pipeline(transaction=False)
            for index in indexes:
                keys, args = calls[index]
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            for index, result in zip(indexes, pipe.execute(raise_on_error=False), strict=True):
                if isinstance(result, NOT_RUN):
                    # Not run (script flushed, slot moved): send it again the slow way,
                    # through the cluster client, which follows MOVED.
                    keys, args = calls[index]
                    result = _on_its_node(cluster, script, keys, args)
                elif isinstance(result, Exception):
                    raise result
                results[index] = result
        return results


def _on_its_node(cluster: RedisCluster, script: Script, keys: list[str], args: list[Any]) -> Any:
    """Run ``script`` through the cluster client (which follows MOVED and ASK). A node
    that lacks it (restarted, flushed) gets it loaded, on that node only: redis-py's own
    SCRIPT LOAD goes to every primary, so one stalled primary would fail every key's
    first call."""
    try:
        return cluster.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        cluster.get_redis_connection(cluster.get_node_from_key(keys[0])).script_load(script.script)
        return cluster.evalsha(script.sha, len(keys), *keys, *args)


def _by_node(cluster: RedisCluster, calls: list[tuple[list[str], list[Any]]]) -> tuple[dict, dict[str, list[int]]]:
    """The node of each call (by its first key), and the calls of each node."""
    by_node: dict[str, list[int]] = defaultdict(list)
    nodes: dict[str, ClusterNode] = {}
    for index, (keys, _) in enumerate(calls):
        node = cluster.get_node_from_key(keys[0])
        nodes[node.name] = node
        by_node[node.name].append(index)
    return nodes, by_node
