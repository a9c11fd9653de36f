"""A breaker per Redis node: once a node has let a call time out, calls to it fail at once.

Requests run one at a time on their worker's loop (``ringsum.http.edge``), so a call that
waits out ``RINGSUM_REDIS_TIMEOUT`` holds every request queued behind it; were each of
those to wait it out in turn, the last would wait the timeout times the queue (measured:
24 clients, ``DEBUG SLEEP 8``, answers after up to 7.9 s with a 1 s timeout). So the
first timeout opens the node's breaker: from then on a call to that node raises
``NodeStalled`` before sending a byte, and one background thread probes the node (a
fresh connection and a PING, with the same timeout) until it answers, which closes the
breaker. No request ever waits on a probe.

Only a timeout opens it. A refused connection costs no wait, and the request after a
Redis restart must find it back, so that one is left to fail (fast) on its own.

The breaker lives in the connection class (``guarded``), so every call to a node goes
through it whatever sent it: scripts, pipelines, the Cluster client's topology reads.
Per node, by ``host:port``: on Cluster a stalled shard fails only its own keys' requests.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 0.1  # between two probes of a node that did not answer


class NodeStalled(redis.ConnectionError):
    """A call to a node whose breaker is open: not sent."""


class Breakers:
    """The open breakers of one storage, and the threads that probe their nodes."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.open: dict[str, float] = {}  # node name -> when it opened (monotonic)
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def check(self, node: str) -> None:
        """NodeStalled when ``node``'s breaker is open (one dict lookup: every call pays it)."""
        opened = self.open.get(node)
        if opened is not None:
            raise NodeStalled(
                f"Redis at {node} stopped answering {time.monotonic() - opened + self.timeout_s:.1f}s ago"
            )

    def trip(self, node: str, probe: Any) -> None:
        """Open ``node``'s breaker (a no-op when it is open) and probe it with
        ``probe()``, which raises until the node answers."""
        with self._lock:
            if node in self.open or self._stopped.is_set():
                return
            self.open[node] = time.monotonic()
        log.warning(
            "Redis at %s did not answer within %gs (RINGSUM_REDIS_TIMEOUT): its requests get a 503 at once "
            "until it answers again",
            node,
            self.timeout_s,
        )
        threading.Thread(
            target=self._probe_until_answered, args=(node, probe), name="ringsum-redis-probe", daemon=True
        ).start()

    def _probe_until_answered(self, node: str, probe: Any) -> None:
        while not self._stopped.wait(PROBE_INTERVAL_S):
            try:
                probe()
            except Exception:
                continue
            with self._lock:
                opened = self.open.pop(node, None)
            if opened is not None:
                log.warning("Redis at %s answers again, after %.1fs", node, time.monotonic() - opened)
            return

    def stop(self) -> None:
        """The storage is closed: probes end."""
        self._stopped.set()


def guarded(base: type[redis.connection.AbstractConnection], breakers: Breakers) -> type:
    """A connection class like ``base`` whose calls go through ``breakers``."""

    class GuardedConnection(base):  # type: ignore[valid-type, misc]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._kwargs = kwargs
            self._node = self._host_error()  # host:port (or the socket's path)

        def _probe(self) -> None:
            """PING on a fresh connection of the unguarded class."""
            connection = base(**self._kwargs)
            try:
                connection.connect()
                connection.send_command("PING")
                connection.read_response()
            finally:
                connection.disconnect()

        def _timed_out(self) -> None:
            breakers.trip(self._node, self._probe)

        def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
            if self._sock:
                return
            breakers.check(self._node)
            try:
                super().connect_check_health(*args, **kwargs)
            except redis.TimeoutError:
                self._timed_out()
                raise

        def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
            breakers.check(self._node)
            try:
                super().send_packed_command(*args, **kwargs)
            except redis.TimeoutError:
                self._timed_out()
                raise

        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().read_response(*args, **kwargs)
            except redis.TimeoutError:
                self._timed_out()
                raise

    GuardedConnection.__name__ = GuardedConnection.__qualname__ = f"Guarded{base.__name__}"
    return GuardedConnection
