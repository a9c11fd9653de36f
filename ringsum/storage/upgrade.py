"""``python -m ringsum.storage.upgrade``: convert Redis storage from key layout 1 to 2, in place.

Layout 1 (ringsum 0.2 and before) kept a metric key in a hash of subtotals and a
sorted set of slots; layout 2 keeps it in one string, a few hundred bytes while sparse
and 8 bytes a slot once busy (``redis_layout.py``). A ringsum of layout 2 that finds
``ringsum:layout`` = 1 serves nothing (503s, and one log line naming this command)
rather than misread the data.

Run with the same RINGSUM_* settings as the servers (storage URI, window, resolution),
after stopping every ringsum of the older version: one still writing would write
layout-1 keys after their conversion. It refuses to start while Redis lists clients
of the older version (they name themselves ``ringsum``), unless ``--force``. It walks
every primary with SCAN, converts each key atomically in a Lua script (a few hundred
per round trip; values aged out are dropped on the way, the key's TTL kept), makes
sure the listing index names every key, and then sets ``ringsum:layout`` to 2. It may
be interrupted and run again: it converts what is left. Idempotency markers keep their
layout and stay valid.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from redis.exceptions import ResponseError

from . import redis_layout as layout
from .base import StorageUnavailable
from .redis import INDEX, LAYOUT_KEY, LAYOUT_VERSION, RedisStorage

OLDER_CLIENT_NAME = "ringsum"  # what ringsum of layout 1 names its Redis connections
_SCAN_STEP = 1000
_KEYS_PER_SCRIPT = 500


class UpgradeRefused(Exception):
    """The upgrade cannot run now; the message says why and what to do."""


@dataclass(frozen=True)
class Upgraded:
    """What an upgrade did: keys converted (holding values in the window) and
    layout-1 keys whose values had all aged out (deleted)."""

    converted: int
    aged_out: int
    found_layout: str | None


def upgrade(storage: RedisStorage, *, force: bool = False) -> Upgraded:
    """Convert every layout-1 key ``storage`` can reach, then mark layout 2. ``storage``
    must be built with ``check_layout=False``."""
    with storage._errors():
        client = storage._connect()
        found = client.get(LAYOUT_KEY)
        shown = found.decode(errors="replace") if found is not None else None  # type: ignore[union-attr]
        if shown is not None and not (shown.isdigit() and int(shown) <= LAYOUT_VERSION):
            raise UpgradeRefused(
                f"{LAYOUT_KEY} is {shown!r}, a layout newer than {LAYOUT_VERSION}: nothing to upgrade; "
                "run a newer ringsum"
            )
        if not force:
            _refuse_older_clients(storage)
        converted = aged_out = 0
        for keys in _layout_1_keys(storage):
            done = _convert(storage, keys)
            converted, aged_out = converted + len(done), aged_out + len(keys) - len(done)
        client.set(LAYOUT_KEY, LAYOUT_VERSION)
    return Upgraded(converted, aged_out, shown)


def _refuse_older_clients(storage: RedisStorage) -> None:
    """UpgradeRefused while a ringsum of layout 1 is connected to any primary."""
    older = 0
    for _, node in storage._nodes():
        older += sum(1 for client in node.client_list() if client.get("name") == OLDER_CLIENT_NAME)
    if older:
        raise UpgradeRefused(
            f"{older} connections of an older ringsum (client name {OLDER_CLIENT_NAME!r}) are open: "
            "stop every older ringsum first, or pass --force"
        )


def _layout_1_keys(storage: RedisStorage) -> Iterator[list[str]]:
    """Metric keys of layout 1 (named by their sorted sets), a SCAN step at a time."""
    pattern = f"{layout.NAMESPACE}{{*{layout.LAYOUT_1_SUFFIXES[1]}"
    for _, node in storage._nodes():
        cursor = None
        while cursor != 0:
            cursor, found = node.scan(cursor or 0, match=pattern, count=_SCAN_STEP)
            names = list(dict.fromkeys(name.decode() for name in found))  # type: ignore[union-attr]
            if names:
                yield [name[len(layout.NAMESPACE) + 1 : -len(layout.LAYOUT_1_SUFFIXES[1])] for name in names]


def _convert(storage: RedisStorage, keys: list[str]) -> list[str]:
    """Convert ``keys`` (one script per hash slot and per few hundred keys); the keys that
    hold values now join the listing index. Returns those."""
    calls = []
    for part in storage._partition(keys):
        for start in range(0, len(part), _KEYS_PER_SCRIPT):
            chunk = part[start : start + _KEYS_PER_SCRIPT]
            hashes, sets = zip(*map(layout.layout_1_keys, chunk), strict=True)
            calls.append((chunk, [*map(layout.string_key, chunk), *hashes, *sets], [str(len(chunk)), storage._ttl_ms]))
    results = storage._run_prepared("upgrade", [(redis_keys, args) for _, redis_keys, args in calls])
    held = [
        chunk[position - 1] for (chunk, _, _), positions in zip(calls, results, strict=True) for position in positions
    ]
    if held:
        storage._connect().zadd(INDEX, dict.fromkeys(held, 0), nx=True)
    return held


def main(argv: list[str] | None = None) -> int:
    from ..config import ConfigError, load_settings
    from . import storage_class

    parser = argparse.ArgumentParser(prog="python -m ringsum.storage.upgrade", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--force", action="store_true", help="run even while Redis lists connections of an older ringsum"
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"ringsum upgrade: {error}", file=sys.stderr)
        return 2
    backend = storage_class(settings.storage_uri)
    if not issubclass(backend, RedisStorage):
        print(
            f"ringsum upgrade: RINGSUM_STORAGE_URI is {settings.storage_uri.partition('://')[0]}://, not Redis: "
            "nothing to upgrade",
            file=sys.stderr,
        )
        return 2
    storage = backend(settings.storage_uri, settings.storage_options(), check_layout=False)
    try:
        done = upgrade(storage, force=args.force)
    except (UpgradeRefused, StorageUnavailable, ResponseError) as error:
        print(f"ringsum upgrade: {error}", file=sys.stderr)
        return 2
    finally:
        storage.close()
    print(
        f"ringsum upgrade: {backend.shown_uri(settings.storage_uri)} was layout {done.found_layout or '(unmarked)'}: "
        f"{done.converted} keys converted, {done.aged_out} whose values had aged out deleted; "
        f"it is layout {LAYOUT_VERSION} now"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
