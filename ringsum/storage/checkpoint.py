"""Rebuild the window from a data dir, at start and in checkpoints.

Both read the snapshot, replay the log segments after it in order with each record's
own time, then age out what left the window: deterministic, so a checkpoint can fold
the files in a child process (``python -m ringsum.storage.checkpoint``), off the
serving process's lock and GIL, and get what the server holds in memory.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..core.parent_death import die_with_parent
from ..core.window import RollingSum
from . import file_header
from .base import DataDirError, Marker
from .datadir import SNAPSHOT_NAME, DataDir
from .inventory import REPAIR_HINT, find_missing, refusal
from .journal import DELETE, MAGIC, Record, Segment, read_segment
from .markers import Markers
from .snapshot import read_snapshot, write_snapshot

log = logging.getLogger(__name__)


@dataclass
class Restored:
    """The window rebuilt from the files, its keys oldest newest-entry first (the
    order the sweep relies on)."""

    sums: dict[str, RollingSum]
    records: int  # log records replayed
    last_sequence: int  # the newest segment read (or the one the snapshot covers)
    differs_from_files: bool  # a damaged snapshot was set aside or keys were cut to max_keys
    markers: list[tuple[int, Marker]] = field(default_factory=list)  # live ones: (expires at µs, marker)
    damaged: list[str] = field(default_factory=list)  # names of the damaged files kept aside at this start
    accepted: list[str] = field(default_factory=list)  # what was missing, accepted by --repair
    clock_us: int = 0  # the time it was rebuilt at: the newest the files hold, or later (see load)


def replay(
    sums: dict[str, RollingSum],
    newest: dict[str, int],
    record: Record,
    new_sum: Callable[[], RollingSum],
    markers: Markers | None = None,
) -> None:
    """Apply one log record as the storage applied it when it was written, its
    idempotency marker (to ``markers``) included."""
    if record.kind == DELETE:
        sums.pop(record.key, None)
        return
    time_us = record.time_us
    if record.marker is not None and markers is not None:
        markers.add(record.marker, time_us)
    for key, value in record.events:
        rolling = sums.get(key)
        if rolling is None:
            rolling = sums[key] = new_sum()
        else:
            rolling.evict(time_us)
        rolling.add(value, time_us)
        newest[key] = time_us


def load(
    data_dir: DataDir,
    window_us: int,
    resolution_us: int,
    now_us: int,
    *,
    max_keys: int | None = None,
    upto: int | None = None,
    repair: bool = False,
    accept_missing: bool = False,
) -> Restored:
    """The window the files hold at ``now_us``: the snapshot plus segments up to ``upto``.
    Never earlier than the newest time the files hold (the snapshot's clock, a record's
    time, a clock mark): the window's clock never goes back, over a restart either.
    With ``repair`` (at start, lock held): a data dir that is not whole is refused
    (inventory.py) unless ``accept_missing`` (``--repair``); damaged tails are cut off
    and damaged files kept aside, one warning each; segments already folded are deleted.
    The caller writes a new snapshot when the result ``differs_from_files``."""
    snapshot = read_snapshot(data_dir.snapshot)
    accepted: list[str] = []
    if snapshot.covers is None:
        problem = f"{data_dir.snapshot} is damaged ({snapshot.damage}): which log segments it holds cannot be known"
        if not accept_missing:
            raise DataDirError(f"{problem}, and replaying them could skip values or count them twice; {REPAIR_HINT}")
        segments = data_dir.segments()
        snapshot.covers = segments[0][0] - 1 if segments else 0
        accepted.append(
            f"{problem}: assumed segment {snapshot.covers}, the one before the oldest there (had a crash left "
            "folded segments behind, their values count twice)"
        )
    missing = find_missing(data_dir, snapshot.covers, snapshot.version) if repair else []
    if missing and not accept_missing:
        raise refusal(data_dir, missing)
    moved = next((item for item in missing if item.covers_instead is not None), None)
    if moved is not None and moved.covers_instead is not None:
        snapshot.covers = moved.covers_instead
        accepted.append(f"{moved.text}: took it as covering segment {snapshot.covers}, the one before the oldest there")
        missing = find_missing(data_dir, snapshot.covers, snapshot.version)
    accepted += [item.text for item in missing]
    set_aside = {item.set_aside for item in missing if item.set_aside is not None}
    differs, damaged = bool(accepted), []
    if snapshot.damage is not None and repair:
        aside = data_dir.keep_damaged(data_dir.snapshot, copy=True)  # replaced by the caller's new snapshot
        damaged.append(aside.name)
        log.warning(
            "snapshot %s is damaged (%s): kept the %d whole keys and %d markers before the damage, lost the "
            "keys after it (those the log after it does not write again); the file is kept as %s",
            data_dir.snapshot,
            snapshot.damage,
            len(snapshot.keys),
            len(snapshot.markers),
            aside.name,
        )
        differs = True

    def new_sum() -> RollingSum:
        return RollingSum(window_us, resolution_us)

    sums: dict[str, RollingSum] = {}
    newest: dict[str, int] = {}
    # As the storage keeps them: the window and one tick after their write. No cap
    # here: a marker is never dropped inside its time, even if the cap was lowered.
    markers = Markers(window_us + (resolution_us or 1), sys.maxsize)
    for expires, marker in snapshot.markers:
        markers.restore(marker, expires)
    for key, entries in snapshot.keys.items():
        rolling = sums[key] = new_sum()
        for time_us, subtotal, count in entries:
            rolling.add(subtotal, time_us, count)
        if entries:
            newest[key] = entries[-1][0]
    # A format-1 snapshot says no clock: its newest entry and marker tell the least it was.
    lifetime = window_us + (resolution_us or 1)
    marked = max((expires - lifetime for expires, _ in snapshot.markers), default=0)
    clock_us = max(snapshot.clock_us, max(newest.values(), default=0), marked)
    records, last = 0, snapshot.covers
    for sequence, path in data_dir.segments():
        if upto is not None and sequence > upto:
            break
        if sequence <= snapshot.covers:
            if repair:  # folded already; a crash came before the checkpoint deleted it
                path.unlink(missing_ok=True)
            continue
        if path in set_aside:  # empty, or another segment under this name: not replayed, kept
            damaged.append(data_dir.keep_damaged(path, copy=False).name)
            continue
        segment = read_segment(path)
        if segment.damage is not None and repair:
            aside = data_dir.keep_damaged(path, copy=True)
            damaged.append(aside.name)
            lost = path.stat().st_size - segment.good_size
            log.warning(
                "log segment %s is damaged (%s): %s; the whole file is kept as %s",
                path,
                segment.damage,
                f"replayed its {len(segment.records)} whole records before byte {segment.good_size}; lost the "
                f"{lost} bytes from there on (the damaged record and every record after it in this segment; "
                "later segments are replayed)"
                if lost
                else f"replayed all its {len(segment.records)} records; its header is written anew",
                aside.name,
            )
            _cut_back(path, sequence, segment)
        for record in segment.records:
            replay(sums, newest, record, new_sum, markers)
        if segment.records:
            clock_us = max(clock_us, max(record.time_us for record in segment.records))
        records += len(segment.records)
        last = sequence
    now_us = max(now_us, clock_us)
    live = []
    for key, rolling in sums.items():
        rolling.evict(now_us)
        if rolling:
            live.append((newest.get(key, 0), key))
    live.sort()
    if max_keys is not None and len(live) > max_keys:
        log.warning("the data dir holds %d live keys; kept the %d newest (RINGSUM_MAX_KEYS)", len(live), max_keys)
        live, differs = live[-max_keys:], True
    live_markers = [(expires, marker) for expires, marker in markers.items() if expires > now_us]
    kept = {key: sums[key] for _, key in live}
    return Restored(kept, records, last, differs, live_markers, damaged, accepted, now_us)


def _cut_back(path: Path, sequence: int, segment: Segment) -> None:
    """Cut a damaged segment back to its last whole record, so new records never follow
    garbage; a header that could not be read or failed its checksum is written anew."""
    good_size = segment.good_size
    with path.open("r+b") as file:
        if not good_size or (segment.header is not None and segment.header.damage):
            if not good_size:
                file.truncate(0)
            file.seek(0)
            file.write(file_header.pack(MAGIC, sequence))
            good_size = max(good_size, file_header.SIZE)
        file.truncate(good_size)
        file.flush()
        os.fsync(file.fileno())


def save(
    data_dir: DataDir,
    covers: int,
    sums: dict[str, RollingSum],
    markers: list[tuple[int, Marker]] | None = None,
    clock_us: int = 0,
) -> None:
    """Write ``sums`` and ``markers`` (as of the window's clock ``clock_us``) as the
    snapshot covering segments up to ``covers``, then delete those."""
    entries = ((key, list(r.entries())) for key, r in sums.items())
    write_snapshot(data_dir.path, SNAPSHOT_NAME, covers, entries, markers or [], clock_us)
    for sequence, path in data_dir.segments():
        if sequence <= covers:
            path.unlink(missing_ok=True)


class _Unlocked(DataDir):
    """The data dir as the fold child sees it: its parent holds the lock."""

    def __init__(self, path: str) -> None:  # no lock taken
        self.path = Path(path).absolute()
        self._dir_fd = self._lock_fd = -1

    def expect(self, identity: tuple[int, int] | None) -> None:
        """Raise DataDirError unless ``path`` is still the directory with ``identity``."""
        if identity is None:
            return
        self.identity = identity
        gone = self.gone()
        if gone is not None:
            raise DataDirError(f"{gone}: not folded")


def fold(
    path: str, upto: int, window_us: int, resolution_us: int, now_us: int, directory_id: tuple[int, int] | None = None
) -> int:
    """A checkpoint: fold the snapshot and the segments up to ``upto`` into a new
    snapshot; returns the keys written. Run by the serving process in a child.
    ``directory_id`` (device, inode): the directory the server holds; a fold finding
    another one at ``path`` (deleted and made again, replaced) does nothing."""
    data_dir = _Unlocked(path)
    data_dir.expect(directory_id)
    restored = load(data_dir, window_us, resolution_us, now_us, upto=upto)
    data_dir.expect(directory_id)
    save(data_dir, max(upto, restored.last_sequence), restored.sums, restored.markers, restored.clock_us)
    return len(restored.sums)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringsum.storage.checkpoint", description=fold.__doc__)
    parser.add_argument("data_dir")
    parser.add_argument("upto", type=int)
    parser.add_argument("--window-us", type=int, required=True)
    parser.add_argument("--resolution-us", type=int, required=True)
    parser.add_argument("--now-us", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--directory-id", help="device:inode of the directory the server holds")
    args = parser.parse_args(argv)
    # A fold outliving its server could rename a snapshot under the next owner while that
    # one reads the data dir: killed with it (Linux), or not run when it is gone already.
    if not die_with_parent(args.parent_pid, signal.SIGKILL):
        print(f"checkpoint of {args.data_dir} not run: the server that asked for it is gone", file=sys.stderr)
        return 1
    try:
        device, _, inode = (args.directory_id or "").partition(":")
        directory_id = (int(device), int(inode)) if args.directory_id else None
        fold(args.data_dir, args.upto, args.window_us, args.resolution_us, args.now_us, directory_id)
    except Exception as error:
        print(f"checkpoint of {args.data_dir} failed: {error!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
