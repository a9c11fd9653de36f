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
from collections import defaultdict
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.connection import parse_url
from redis.crc import key_slot
from redis.exceptions import ResponseError

from .base import IdempotencyKeyReused, KeyLimitReached, Marker, StorageUnavailable, SumOutOfRange
from .redis import INDEX, NOT_RUN, RedisStorage, client_options, marker_key, refuse_retry

log = logging.getLogger(__name__)


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
        """A client that has read the topology, not yet connected to each node."""
        nodes, uri_options = cluster_options(self._uri)
        return RedisCluster(startup_nodes=nodes, **{**client_options(self._timeout_s), **uri_options})

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
                self._connect().zadd(INDEX, dict.fromkeys(keys, 0))
        except StorageUnavailable:
            log.warning("%d new keys not yet in the listing index; the census adds them", len(keys))

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

    def _partition(self, keys: list[str]) -> list[list[str]]:
        """Those of one hash slot together: a script must not cross slots."""
        by_slot: dict[int, list[str]] = defaultdict(list)
        for key in keys:
            by_slot[key_slot(key.encode())].append(key)
        return list(by_slot.values())

    def _nodes(self) -> Iterator[tuple[str, redis.Redis]]:
        """A name and a client per primary."""
        cluster = self._connect()
        for node in cluster.get_primaries():
            yield node.name, cluster.get_redis_connection(node)

    def _execute(self, cluster: RedisCluster, script: Script, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Several calls: one pipeline per node, so a batch costs a round trip per node,
        not per slot."""
        if len(calls) == 1:
            return super()._execute(cluster, script, calls)
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
                if isinstance(result, NOT_RUN):
                    # Not run (script flushed, slot moved): send it again the slow way,
                    # through the cluster client, which loads scripts and follows MOVED.
                    keys, args = calls[index]
                    result = script(keys, args)
                elif isinstance(result, Exception):
                    raise result
                results[index] = result
        return results
