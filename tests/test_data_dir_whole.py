"""A data dir that is not whole (a log segment missing or cut to 0 bytes, the snapshot
missing beside later segments) is refused at start with one line, or accepted with
``python app.py --repair`` and a line saying what was lost; never served silently."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import requests
from helpers import ManualClock, memory_storage
from serving import free_port, run_app, serving

from ringsum.core.clock import now_us
from ringsum.storage import DataDirError


def three_segments(data_dir: Path) -> tuple[ManualClock, dict[str, int]]:
    """A snapshot covering segment 1, then segments 2, 3 and 4 (the open one), each
    holding one key's writes (at the real time: real servers read them back too)."""
    clock = ManualClock(now_us())
    storage = memory_storage(clock, RINGSUM_DATA_DIR=str(data_dir))
    storage.record("folded", 1)
    storage.checkpoint()
    for sequence, key in ((2, "two"), (3, "three"), (4, "four")):
        storage.record(key, sequence)
        if sequence < 4:
            storage._persistence._journal.rotate()  # a checkpoint's rotation, without its fold
            storage._persistence._journal.seal_closed()
    totals = {key: storage.total(key) for key in ("folded", "two", "three", "four")}
    storage.close()
    assert sorted(path.name for path in data_dir.glob("journal-*")) == [f"journal-000000000{n}.log" for n in (2, 3, 4)]
    return clock, totals


DAMAGE = {
    "a segment missing": lambda data_dir: (data_dir / "journal-0000000003.log").unlink(),
    "a segment cut to 0 bytes": lambda data_dir: (data_dir / "journal-0000000003.log").write_bytes(b""),
    "the snapshot missing": lambda data_dir: (data_dir / "snapshot").unlink(),
    "the first segment missing": lambda data_dir: (data_dir / "journal-0000000002.log").unlink(),
}
SAID = {
    "a segment missing": "log segment 3 missing",
    "a segment cut to 0 bytes": "journal-0000000003.log is empty",
    "the snapshot missing": "no snapshot, yet the log starts at segment 2: log segment 1 and the snapshot",
    "the first segment missing": "log segment 2 missing (the snapshot covers segment 1)",
}
LEFT = {
    "a segment missing": {"folded": 1, "two": 2, "three": 0, "four": 4},
    "a segment cut to 0 bytes": {"folded": 1, "two": 2, "three": 0, "four": 4},
    "the snapshot missing": {"folded": 0, "two": 2, "three": 3, "four": 4},
    "the first segment missing": {"folded": 1, "two": 0, "three": 3, "four": 4},
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_data_dir_that_is_not_whole_is_refused_in_process(tmp_path, damage: str) -> None:
    data_dir = tmp_path / "data"
    clock, _ = three_segments(data_dir)
    DAMAGE[damage](data_dir)
    before = sorted((path.name, path.stat().st_size) for path in data_dir.iterdir())
    with pytest.raises(DataDirError) as refused:
        memory_storage(clock, RINGSUM_DATA_DIR=str(data_dir))
    assert SAID[damage] in str(refused.value) and "--repair" in str(refused.value)
    assert sorted((path.name, path.stat().st_size) for path in data_dir.iterdir()) == before  # nothing touched


@pytest.mark.process
@pytest.mark.parametrize("damage", ["a segment missing", "a segment cut to 0 bytes", "the snapshot missing"])
def test_a_start_on_a_data_dir_that_is_not_whole_is_refused_then_repaired(tmp_path, damage: str) -> None:
    data_dir = tmp_path / "data"
    three_segments(data_dir)
    DAMAGE[damage](data_dir)
    env = {"RINGSUM_DATA_DIR": str(data_dir)}
    refused = run_app(["--port", str(free_port())], env)
    status, output = refused.exit_status(), refused.output()
    lines = output.strip().splitlines()
    assert status == 1 and len(lines) == 1 and "serving" not in output, output
    assert SAID[damage] in lines[0] and "python app.py --repair" in lines[0]

    port = free_port()
    repaired = run_app(["--port", str(port), "--repair"], env)
    try:
        deadline = time.monotonic() + 30
        while "ringsum serving" not in repaired.output():
            assert repaired.process.poll() is None and time.monotonic() < deadline, repaired.output()
            time.sleep(0.05)
        line = next(line for line in repaired.output().splitlines() if "--repair:" in line)
        assert "WARNING" in line and SAID[damage] in line and "values that held are lost" in line
        left = {key: repaired.total(key) for key in LEFT[damage]}
        assert requests.post(f"{repaired.url}/metric/after", json={"value": 9}, timeout=5).status_code == 200
        assert repaired.stop(signal.SIGTERM) == 0
    finally:
        repaired.kill()
    assert left == LEFT[damage]
    with serving(env) as again:  # whole again: no --repair needed from now on
        assert {key: again.total(key) for key in LEFT[damage]} == LEFT[damage]
        assert again.total("after") == 9


def test_repair_on_a_whole_data_dir_changes_nothing(tmp_path, caplog) -> None:
    import logging

    from ringsum.storage.datadir import DataDir
    from ringsum.storage.repair import repair

    data_dir = tmp_path / "data"
    clock, totals = three_segments(data_dir)
    before = sorted((path.name, path.read_bytes()) for path in data_dir.iterdir())
    held = DataDir(data_dir)
    try:
        with caplog.at_level(logging.INFO):
            assert not repair(held, memory_storage_options(data_dir), clock.now_us)
    finally:
        held.release()
    assert "is whole; nothing to repair" in caplog.text
    assert sorted((path.name, path.read_bytes()) for path in data_dir.iterdir()) == before
    again = memory_storage(clock, RINGSUM_DATA_DIR=str(data_dir))
    try:
        assert {key: again.total(key) for key in totals} == totals
    finally:
        again.close()


def memory_storage_options(data_dir: Path):
    from ringsum.config import read_settings

    return read_settings({"RINGSUM_DATA_DIR": str(data_dir)}, environ={}).storage_options()
