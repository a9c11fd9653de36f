"""Format 2 of the data dir's files: every header field checksummed, so a flipped byte in
a snapshot's ``covers`` (or anywhere in a header) is seen, and never makes a restart skip
acknowledged values or count a folded segment twice; format 1 is still read."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from helpers import ManualClock, memory_storage

from ringsum.storage import DataDirError, UnsupportedDataFormat, file_header
from ringsum.storage.journal import read_segment
from ringsum.storage.snapshot import MAGIC as SNAPSHOT_MAGIC
from ringsum.storage.snapshot import read_snapshot

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "datadir-v1-covers"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
T0 = 1_780_000_000_000_000
SECOND = 1_000_000


def restored(data_dir: Path, now_us: int, keys=tuple(EXPECTED["totals"])) -> dict[str, int]:
    storage = memory_storage(ManualClock(now_us), RINGSUM_DATA_DIR=str(data_dir), **EXPECTED["settings"])
    try:
        return {key: storage.total(key) for key in keys}
    finally:
        storage.close()


def test_a_format_1_data_dir_is_read_and_rewritten_as_format_2(tmp_path) -> None:
    data_dir = shutil.copytree(FIXTURE, tmp_path / "data", ignore=shutil.ignore_patterns("expected.json"))
    assert file_header.read(
        data_dir / "snapshot", (data_dir / "snapshot").read_bytes(), SNAPSHOT_MAGIC, number_in_v1=True
    ) == file_header.Header(1, 2, 18)
    clock = ManualClock(EXPECTED["now_us"])
    storage = memory_storage(clock, RINGSUM_DATA_DIR=str(data_dir), **EXPECTED["settings"])
    try:
        assert {key: storage.total(key) for key in EXPECTED["totals"]} == EXPECTED["totals"]
        storage.record("everywhere", 1)
        storage.checkpoint()  # folds segment 3 (format 1) and 4 into a snapshot of format 2
    finally:
        storage.close()
    snapshot = read_snapshot(data_dir / "snapshot")
    assert snapshot.damage is None and snapshot.covers == 4
    assert (data_dir / "snapshot").read_bytes()[8:10] == b"\x02\x00"
    assert [path.name for path in sorted(data_dir.glob("journal-*.log"))] == ["journal-0000000005.log"]
    assert read_segment(data_dir / "journal-0000000005.log").header.number == 5
    assert restored(data_dir, clock.now_us) == {
        **EXPECTED["totals"],
        "everywhere": EXPECTED["totals"]["everywhere"] + 1,
    }


def checkpointed_with_a_leftover(data_dir: Path) -> tuple[dict[str, int], int]:
    """A format-2 data dir whose snapshot covers segment 2, with segment 2 still there (as a
    crash between the snapshot's rename and the deletes leaves it) and segment 3 after:
    a covers read too low counts segment 2 twice, one read too high skips segment 3."""
    clock = ManualClock(T0)
    storage = memory_storage(clock, RINGSUM_DATA_DIR=str(data_dir))
    storage.record("first", 1)
    storage.checkpoint()
    storage.record("second", 10)
    storage.record("both", 100)
    leftover = (data_dir / "journal-0000000002.log").read_bytes()
    storage.checkpoint()
    storage.record("third", 1000)
    storage.record("both", 100)
    expected = {key: storage.total(key) for key in ("first", "second", "third", "both")}
    storage.close()
    (data_dir / "journal-0000000002.log").write_bytes(leftover)
    return expected, clock.now_us


@pytest.mark.parametrize("byte", range(file_header.SIZE))
def test_a_flipped_byte_anywhere_in_a_snapshot_header_is_seen_never_guessed_at(tmp_path, byte: int, caplog) -> None:
    data_dir = tmp_path / "data"
    expected, now_us = checkpointed_with_a_leftover(data_dir)
    snapshot = data_dir / "snapshot"
    data = bytearray(snapshot.read_bytes())
    data[byte] ^= 0x04
    snapshot.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        try:
            found = restored(data_dir, now_us, expected)
        except (DataDirError, UnsupportedDataFormat) as refused:  # magic or version: refused with one line
            assert str(snapshot) in str(refused) and len(str(refused).splitlines()) == 1
            assert byte < file_header.START.size
            return
    assert found == expected  # covers or its checksum: the copy at the end says it, checked by its own CRC
    assert "its header fails its checksum" in caplog.text
    assert (data_dir / "snapshot.damaged").read_bytes() == bytes(data)


def test_a_snapshot_whose_header_and_end_are_both_damaged_is_refused(tmp_path) -> None:
    data_dir = tmp_path / "data"
    _, now_us = checkpointed_with_a_leftover(data_dir)
    snapshot = data_dir / "snapshot"
    data = bytearray(snapshot.read_bytes())
    data[12] ^= 0x01  # covers
    snapshot.write_bytes(bytes(data[:-3]))  # and the end record torn
    with pytest.raises(DataDirError, match="which log segments it holds cannot be known"):
        restored(data_dir, now_us, ())
    assert snapshot.read_bytes() == bytes(data[:-3])  # untouched: nothing is guessed, nothing rewritten


def test_a_flipped_byte_in_a_segment_header_keeps_its_records(tmp_path, caplog) -> None:
    data_dir = tmp_path / "data"
    expected, now_us = checkpointed_with_a_leftover(data_dir)
    segment = data_dir / "journal-0000000003.log"
    data = bytearray(segment.read_bytes())
    data[12] ^= 0x01  # its sequence
    segment.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert restored(data_dir, now_us, expected) == expected
    assert "its header fails its checksum" in caplog.text
    assert (data_dir / "journal-0000000003.log.damaged").read_bytes() == bytes(data)
    assert read_segment(segment).header.number == 3 and read_segment(segment).damage is None  # written anew


@pytest.mark.parametrize("bit", range(64))
def test_a_flipped_bit_in_a_format_1_covers_is_refused_never_guessed_at(tmp_path, bit: int) -> None:
    """Format 1 has no checksum on covers; but a checkpoint always opens the next segment
    before it folds, so a covers that skips or repeats a segment shows in the numbers."""
    data_dir = shutil.copytree(FIXTURE, tmp_path / "data", ignore=shutil.ignore_patterns("expected.json"))
    snapshot = data_dir / "snapshot"
    data = bytearray(snapshot.read_bytes())
    data[10 + bit // 8] ^= 1 << (bit % 8)
    snapshot.write_bytes(bytes(data))
    with pytest.raises(DataDirError, match=r"log segment|says it covers segment") as refused:
        restored(data_dir, EXPECTED["now_us"])
    assert "--repair" in str(refused.value) and len(str(refused.value).splitlines()) == 1
