"""Memory storage snapshots: one JSON file, written atomically, read defensively."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable

log = logging.getLogger(__name__)

FORMAT_VERSION = 1

# key -> [(time_us, subtotal), ...] oldest first
Entries = dict[str, list[tuple[int, int]]]


def write_snapshot(path: str, keys: Iterable[tuple[str, list[tuple[int, int]]]]) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it, so a
    crash mid-write leaves the previous snapshot whole."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".ringsum-snapshot-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump({"version": FORMAT_VERSION, "keys": dict(keys)}, file, separators=(",", ":"))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def read_snapshot(path: str) -> Entries:
    """The saved entries; {} when there is no snapshot. An unreadable file is moved
    aside as ``<path>.corrupt`` with a warning, so the service still starts."""
    try:
        with open(path, encoding="utf-8") as file:
            document = json.load(file)
        return _validated(document)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, RecursionError) as error:
        aside = f"{path}.corrupt"
        os.replace(path, aside)
        log.warning("snapshot %s is unreadable (%s); moved it to %s and started empty", path, error, aside)
        return {}


def _validated(document: object) -> Entries:
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        raise ValueError(f"not a version {FORMAT_VERSION} ringsum snapshot")
    keys = document.get("keys")
    if not isinstance(keys, dict):
        raise ValueError("no keys object")
    entries: Entries = {}
    for key, pairs in keys.items():
        if not isinstance(pairs, list):
            raise ValueError(f"entries of {key!r} are not a list")
        checked = []
        for pair in pairs:
            if not (isinstance(pair, list) and len(pair) == 2 and all(type(n) is int for n in pair)):
                raise ValueError(f"bad entry {pair!r} for {key!r}")
            checked.append((pair[0], pair[1]))
        entries[key] = checked
    return entries
