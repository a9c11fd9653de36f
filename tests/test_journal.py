"""The data dir's files byte by byte: log framing, damage, format versions, snapshots, the lock."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from zlib import crc32

import pytest

from ringsum.storage import DataDirInUse, Marker, UnsupportedDataFormat, file_header
from ringsum.storage import journal as log
from ringsum.storage.datadir import DataDir
from ringsum.storage.journal import BATCH, DELETE, SINGLE, Record, read_segment
from ringsum.storage.journal_writer import FsyncMode, Journal
from ringsum.storage.snapshot import read_snapshot, write_snapshot

T = 1_780_000_000_123_456
RECORDS = [
    (log.single(T, "visits", 3), Record(SINGLE, T, [("visits", 3)])),
    (
        log.batch(T + 1, [("a", -(2**53 - 1)), ("b.c:d-e_f", 2**53 - 1)]),
        Record(BATCH, T + 1, [("a", -(2**53 - 1)), ("b.c:d-e_f", 2**53 - 1)]),
    ),
    (log.delete(T + 2, "visits"), Record(DELETE, T + 2, key="visits")),
    (log.single(T + 3, "x" * 200, 0), Record(SINGLE, T + 3, [("x" * 200, 0)])),
]


def segment_file(path: Path, frames: list[bytes]) -> bytes:
    """A segment as the journal writes it: header, then the frames."""
    data = file_header.pack(log.MAGIC, 1) + b"".join(frames)
    path.write_bytes(data)
    return data


def test_every_record_type_reads_back_as_written(tmp_path) -> None:
    segment_file(tmp_path / "s.log", [frame for frame, _ in RECORDS])
    segment = read_segment(tmp_path / "s.log")
    assert segment.damage is None
    assert [(r.kind, r.time_us, list(r.events), r.key) for r in segment.records] == [
        (r.kind, r.time_us, list(r.events), r.key) for _, r in RECORDS
    ]


def test_a_torn_last_record_costs_only_that_record_at_every_byte_offset(tmp_path) -> None:
    path = tmp_path / "s.log"
    whole = segment_file(path, [frame for frame, _ in RECORDS])
    last_start = len(whole) - len(RECORDS[-1][0])
    for cut in range(last_start, len(whole)):
        path.write_bytes(whole[:cut])
        segment = read_segment(path)
        assert len(segment.records) == len(RECORDS) - 1, cut
        assert segment.good_size == last_start
        assert (segment.damage is not None) == (cut > last_start), cut


def test_a_cut_inside_the_header_reads_as_damaged_and_empty(tmp_path) -> None:
    path = tmp_path / "s.log"
    whole = segment_file(path, [RECORDS[0][0]])
    for cut in range(1, file_header.SIZE):
        path.write_bytes(whole[:cut])
        assert read_segment(path).records == [] and read_segment(path).damage is not None
    path.write_bytes(b"")
    assert read_segment(path).records == [] and read_segment(path).damage is None  # created, nothing written yet


@pytest.mark.parametrize(
    "garbage", [b"\x00", b"\x00" * 4096, b"\xff" * 9, b"hello world, not a record", bytes(range(256))]
)
def test_garbage_appended_keeps_every_whole_record_before_it(tmp_path, garbage: bytes) -> None:
    path = tmp_path / "s.log"
    whole = segment_file(path, [frame for frame, _ in RECORDS])
    path.write_bytes(whole + garbage)
    segment = read_segment(path)
    assert len(segment.records) == len(RECORDS)
    assert segment.good_size == len(whole) and segment.damage is not None


def test_a_checksum_mismatch_stops_the_replay_at_that_record(tmp_path) -> None:
    path = tmp_path / "s.log"
    whole = bytearray(segment_file(path, [frame for frame, _ in RECORDS]))
    second = file_header.SIZE + len(RECORDS[0][0])
    whole[second + log.FRAME.size + 12] ^= 0x01  # one bit of the second record's value
    path.write_bytes(bytes(whole))
    segment = read_segment(path)
    assert len(segment.records) == 1 and segment.good_size == second
    assert "checksum" in segment.damage


def test_a_newer_format_version_is_refused_naming_the_file(tmp_path) -> None:
    path = tmp_path / "journal-0000000001.log"
    newer = file_header.FORMAT_VERSION + 1
    path.write_bytes(file_header.START.pack(log.MAGIC, newer) + RECORDS[0][0])
    with pytest.raises(UnsupportedDataFormat) as refused:
        read_segment(path)
    assert str(path) in str(refused.value) and f"version {newer}" in str(refused.value)
    assert len(str(refused.value).splitlines()) == 1
    snapshot = tmp_path / "snapshot"
    snapshot.write_bytes(file_header.START.pack(b"RINGSUMS", 7) + bytes(8))
    with pytest.raises(UnsupportedDataFormat, match="snapshot has format version 7"):
        read_snapshot(snapshot)


def test_optional_fields_behind_flag_bits_are_skipped_by_this_reader(tmp_path) -> None:
    """How a later version adds a field to a write without a format break (bit 0 is
    the idempotency marker; bits 1 and 2 are unknown here)."""
    later = b"something=42;of=a later version"
    body = struct.pack("<BBq", SINGLE, 0b110, T) + struct.pack("<qH", 5, 1) + b"k"
    body += struct.pack("<I", len(later)) + later + struct.pack("<I", 0)  # bits 1 and 2: two fields
    frame = struct.pack("<II", len(body), crc32(body)) + body
    segment_file(tmp_path / "s.log", [frame, RECORDS[0][0]])
    segment = read_segment(tmp_path / "s.log")
    assert segment.damage is None
    assert [list(r.events) for r in segment.records] == [[("k", 5)], [("visits", 3)]]


def test_a_snapshot_reads_back_its_keys_and_what_it_covers(tmp_path) -> None:
    keys = {
        "a": [(T, 1, 1), (T + 5, -2, 3), (T + 6, 9, 0)],  # count 0: not known (restored from format 1)
        "wide": [(T, 2**70, 2), (T + 1, -(2**64), 1)],
        "many": [(T, 5, 2**40)],  # a count past 32 bits takes the wide record
        "empty": [],
    }
    write_snapshot(tmp_path, "snapshot", 41, keys.items())
    snapshot = read_snapshot(tmp_path / "snapshot")
    assert snapshot.damage is None and snapshot.covers == 41 and snapshot.keys == keys
    assert [p.name for p in tmp_path.iterdir()] == ["snapshot"]  # the temporary file was renamed


def test_a_damaged_snapshot_yields_the_whole_keys_before_the_damage(tmp_path) -> None:
    write_snapshot(tmp_path, "snapshot", 3, [("a", [(T, 1, 1)]), ("b", [(T, 2, 1)]), ("c", [(T, 3, 1)])])
    whole = (tmp_path / "snapshot").read_bytes()
    for cut in range(len(whole)):
        (tmp_path / "snapshot").write_bytes(whole[:cut])
        snapshot = read_snapshot(tmp_path / "snapshot")
        assert snapshot.damage is not None, cut
        assert list(snapshot.keys) == ["a", "b", "c"][: len(snapshot.keys)]
    (tmp_path / "snapshot").write_bytes(whole + b"garbage")
    snapshot = read_snapshot(tmp_path / "snapshot")
    assert "follow its end" in snapshot.damage and list(snapshot.keys) == ["a", "b", "c"]


def test_a_failed_snapshot_write_leaves_the_previous_one_whole(tmp_path) -> None:
    write_snapshot(tmp_path, "snapshot", 1, [("a", [(T, 1, 1)])])
    before = (tmp_path / "snapshot").read_bytes()

    def failing_midway():
        yield ("b", [(T, 2, 1)])
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_snapshot(tmp_path, "snapshot", 2, failing_midway())
    assert (tmp_path / "snapshot").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["snapshot"]  # the temporary file is gone too


def test_temporary_files_a_crash_left_are_removed(tmp_path) -> None:
    (tmp_path / "snapshot.x1y2.tmp").write_bytes(b"half a snapshot")
    (tmp_path / "keep.me").write_bytes(b"not ours")
    data_dir = DataDir(tmp_path)
    try:
        assert data_dir.remove_temporary_files() == ["snapshot.x1y2.tmp"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["LOCK", "keep.me"]
    finally:
        data_dir.release()


def test_the_lock_is_refused_while_held_naming_the_dir_and_can_be_waited_for(tmp_path) -> None:
    first = DataDir(tmp_path / "data")  # created if missing
    with pytest.raises(DataDirInUse) as refused:
        DataDir(tmp_path / "data")
    assert str(tmp_path / "data") in str(refused.value)
    started = time.monotonic()
    with pytest.raises(DataDirInUse):
        DataDir(tmp_path / "data", lock_timeout_s=0.3)
    assert time.monotonic() - started >= 0.3
    threading.Timer(0.2, first.release).start()  # the previous owner lets go while we wait
    second = DataDir(tmp_path / "data", lock_timeout_s=10)
    second.release()


@pytest.mark.parametrize("mode", list(FsyncMode))
def test_the_journal_appends_readable_records_in_every_fsync_mode(tmp_path, mode: FsyncMode) -> None:
    def name_of(sequence: int) -> Path:
        return tmp_path / f"journal-{sequence:010d}.log"

    journal = Journal(tmp_path, 1, mode, name_of)
    journal.append(RECORDS[0][0])
    assert read_segment(name_of(1)).records == [RECORDS[0][1]]  # on the file before append() returned
    assert journal.rotate() == 1
    journal.seal_closed()
    journal.append(RECORDS[1][0])
    journal.close()
    assert [len(read_segment(name_of(n)).records) for n in (1, 2)] == [1, 1]


def test_a_fold_whose_server_is_gone_does_nothing(tmp_path) -> None:
    """The fold child checks that the server that started it is still its parent: a
    fold outliving its server must not rename a snapshot under the next owner."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    segment_file(data_dir / "journal-0000000001.log", [RECORDS[0][0]])
    command = [sys.executable, "-m", "ringsum.storage.checkpoint", str(data_dir), "1"]
    command += ["--window-us=3600000000", "--resolution-us=1000000", f"--now-us={T}"]
    root = Path(__file__).resolve().parent.parent
    gone = subprocess.run([*command, "--parent-pid=1"], cwd=root, capture_output=True, text=True, timeout=60)
    assert gone.returncode == 1 and "is gone" in gone.stderr
    assert sorted(p.name for p in data_dir.iterdir()) == ["journal-0000000001.log"]  # untouched
    ours = subprocess.run(
        [*command, f"--parent-pid={os.getpid()}"], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert ours.returncode == 0, ours.stderr
    assert sorted(p.name for p in data_dir.iterdir()) == ["snapshot"]
    assert read_snapshot(data_dir / "snapshot").keys == {"visits": [(T // 1_000_000 * 1_000_000, 3, 1)]}


MARKER = Marker("8e03978e-40d5-43e8-bc93-6894a57f9324", bytes(range(32)), 200, b'{"recorded": 2}')


def test_a_write_carries_its_idempotency_marker_in_its_own_record(tmp_path) -> None:
    frames = [
        log.single(T, "visits", 3, MARKER),
        log.batch(T + 1, [("a", 1), ("b", 2)], MARKER),
        log.single(T + 2, "plain", 1),
    ]
    segment_file(tmp_path / "s.log", frames)
    segment = read_segment(tmp_path / "s.log")
    assert segment.damage is None
    assert [(list(r.events), r.marker) for r in segment.records] == [
        ([("visits", 3)], MARKER),
        ([("a", 1), ("b", 2)], MARKER),
        ([("plain", 1)], None),
    ]


def test_a_snapshot_reads_back_its_idempotency_markers(tmp_path) -> None:
    markers = [(T + 10, MARKER), (T + 20, Marker("k2", b"\0" * 32, 200, b"{}"))]
    write_snapshot(tmp_path, "snapshot", 7, [("a", [(T, 1, 1)])], markers)
    snapshot = read_snapshot(tmp_path / "snapshot")
    assert snapshot.damage is None and snapshot.keys == {"a": [(T, 1, 1)]} and snapshot.markers == markers
