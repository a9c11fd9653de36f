"""The idempotency markers of the memory storage: a table in expiry order, with a cap.

Markers are added as their writes happen, so insertion order is expiry order and the
expired ones gather at the front, as the keys do for the sweep. Not thread-safe on
purpose: the memory storage calls it under its own lock, in the same hold as the
write a marker guards, which is what makes the two atomic.
"""

from __future__ import annotations

from collections.abc import Iterator

from .base import IdempotencyKeyReused, Marker, MarkerLimitReached


class Markers:
    """Markers by id, each kept ``lifetime_us`` after its write; at most ``limit`` held."""

    def __init__(self, lifetime_us: int, limit: int) -> None:
        self._lifetime_us = lifetime_us
        self._limit = limit
        # id -> (expires at, fingerprint, status, body), oldest first. Plain tuples of
        # atomic values: the garbage collector stops tracking them, so a full table
        # costs no collector time.
        self._held: dict[str, tuple[int, bytes, int, bytes]] = {}

    def __len__(self) -> int:
        return len(self._held)

    def find(self, marker: Marker, now: int) -> Marker | None:
        """The live marker held under ``marker.id``, or None. Raises IdempotencyKeyReused
        when that id was first used for another request (another fingerprint)."""
        found = self._held.get(marker.id)
        if found is None:
            return None
        expires, fingerprint, status, body = found
        if expires <= now:
            del self._held[marker.id]
            return None
        if fingerprint != marker.fingerprint:
            raise IdempotencyKeyReused(marker.id)
        return Marker(marker.id, fingerprint, status, body)

    def make_room(self, now: int) -> None:
        """Raise MarkerLimitReached unless one more marker fits; expired ones go first.
        Never a live one: forgetting it would let its retry count twice."""
        if len(self._held) < self._limit:
            return
        self.drop_expired(now)
        if len(self._held) >= self._limit:
            raise MarkerLimitReached(
                f"{self._limit} idempotency keys are remembered already (RINGSUM_MAX_IDEMPOTENCY_KEYS)"
            )

    def add(self, marker: Marker, now: int) -> None:
        """Remember ``marker`` from ``now`` on; call ``find`` and ``make_room`` first."""
        self.restore(marker, now + self._lifetime_us)

    def restore(self, marker: Marker, expires: int) -> None:
        """Hold ``marker`` until ``expires`` (a replay or a snapshot knows that time)."""
        self._held[marker.id] = (expires, marker.fingerprint, marker.status, marker.body)

    def drop_expired(self, now: int, most: int | None = None) -> int:
        """Forget up to ``most`` expired markers from the front; stop at the first live
        one. Returns how many were dropped."""
        expired: list[str] = []
        for marker_id, (expires, *_) in self._held.items():
            if expires > now or len(expired) == most:
                break
            expired.append(marker_id)
        for marker_id in expired:
            del self._held[marker_id]
        return len(expired)

    def items(self) -> Iterator[tuple[int, Marker]]:
        """``(expires at, marker)`` of every marker held, oldest first."""
        return iter([(expires, Marker(id_, *rest)) for id_, (expires, *rest) in self._held.items()])  # type: ignore[arg-type]
