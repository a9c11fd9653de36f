"""Whether a data dir is whole: after the snapshot, every log segment, none missing, none
emptied, each the one its name says.

A snapshot covers the segments up to ``covers``; the log goes on in segments covers+1,
covers+2, ... with no gap (a checkpoint opens the next segment before it folds the ones
before), and ringsum never leaves a segment of 0 bytes (it is made whole, header
included, before it gets its name). So a gap in the numbers, a segment cut to 0 bytes,
a snapshot missing beside later segments, or a header naming another number means
acknowledged values are gone: a start that carried on would serve the wrong sums and
say nothing. It is refused with one line, unless ``python app.py --repair`` accepts
the loss, with a line saying what was lost (then a new snapshot makes the data dir
whole again).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from . import file_header
from .base import DataDirError
from .datadir import DataDir
from .journal import MAGIC as SEGMENT_MAGIC
from .snapshot import MAGIC as SNAPSHOT_MAGIC
from .snapshot import read_snapshot

REPAIR_HINT = "start once with python app.py --repair to accept the loss and serve what is left"


@dataclass(frozen=True)
class Missing:
    """One way the data dir is not whole; ``set_aside``: a file not to replay;
    ``covers_instead``: what to take the snapshot as covering, if the loss is accepted."""

    text: str
    set_aside: Path | None = None
    covers_instead: int | None = None


def find_missing(data_dir: DataDir, covers: int, snapshot_version: int) -> list[Missing]:
    """What is missing from the log after ``covers`` (reads a header per segment).
    ``snapshot_version`` 0: there is no snapshot."""
    has_snapshot = snapshot_version > 0
    every = data_dir.segments()
    segments = [(sequence, path) for sequence, path in every if sequence > covers]
    found = []
    folded = [sequence for sequence, _ in every if sequence <= covers]
    if snapshot_version == 1 and folded and (not segments or segments[0][0] != covers + 1):
        # Format 1 does not checksum covers. Folded segments left behind (a crash before a
        # checkpoint deleted them) always come with the next one, which the server opened
        # before it folded: without it, covers is wrong, and those segments not folded at all.
        found.append(
            Missing(
                f"the snapshot (format 1: this field has no checksum) says it covers segment {covers}, yet "
                f"segment {folded[-1]} is there and {covers + 1} is not",
                covers_instead=folded[0] - 1,
            )
        )
        return found
    if segments and segments[0][0] != covers + 1:
        first = segments[0][0]
        if has_snapshot:
            found.append(Missing(f"{_span(covers + 1, first - 1)} missing (the snapshot covers segment {covers})"))
        else:
            found.append(
                Missing(
                    f"no snapshot, yet the log starts at segment {first}: {_span(1, first - 1)} and the "
                    "snapshot they were folded into are missing"
                )
            )
    for (before, _), (after, _) in pairwise(segments):
        if after != before + 1:
            found.append(Missing(f"{_span(before + 1, after - 1)} missing"))
    for sequence, path in segments:
        with path.open("rb") as file:
            head = file.read(file_header.SIZE)
        if not head:
            found.append(Missing(f"{path.name} is empty (cut to 0 bytes; ringsum never leaves one)", path))
            continue
        number = file_header.read(path, head, SEGMENT_MAGIC, number_in_v1=False).number
        if number is not None and number != sequence:
            found.append(Missing(f"{path.name} says it is segment {number}", path))
    return found


def _span(first: int, last: int) -> str:
    return f"log segment {first}" if first == last else f"log segments {first}-{last}"


def refusal(data_dir: DataDir, missing: list[Missing]) -> DataDirError:
    return DataDirError(
        f"the data dir {data_dir.path} is not whole, so its sums would be wrong: "
        f"{'; '.join(item.text for item in missing)}; {REPAIR_HINT}"
    )


def check(data_dir: DataDir) -> None:
    """Raise DataDirError (one line) unless the data dir is whole; cheap (headers only,
    unless the snapshot's header is damaged). UnsupportedDataFormat for newer files."""
    path = data_dir.snapshot
    try:
        with path.open("rb") as file:
            head = file.read(file_header.SIZE + 8)
    except FileNotFoundError:
        covers, version = 0, 0
    else:
        header = file_header.read(path, head, SNAPSHOT_MAGIC, number_in_v1=True)
        number, version = header.number, header.version
        if number is None:  # its end may say it; or the restore refuses it, naming why
            number = read_snapshot(path).covers
            if number is None:
                return
        covers = number
    for sequence, segment in data_dir.segments():
        if sequence > covers:
            with segment.open("rb") as file:
                file_header.read(segment, file.read(file_header.SIZE), SEGMENT_MAGIC, number_in_v1=False)
    missing = find_missing(data_dir, covers, version)
    if missing:
        raise refusal(data_dir, missing)
