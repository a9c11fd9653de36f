"""An upgrade reads what an older ringsum wrote: data dirs of format 1 from commit f671476
(tests/fixtures/make_datadir_v1.py made them), restored to the answers a storage that
never stopped gives, then checkpointed and restored again by this version."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fixtures.make_datadir_v1 import GUARDED, GUARDED_LATER, KEYS, READ_AFTER_S, SECOND, T0, readings, write

from ringsum.config import read_settings
from ringsum.storage.memory import MemoryStorage

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def open_storage(data_dir: Path, settings: dict[str, str], clock: list[int]) -> MemoryStorage:
    environ = {**settings, "RINGSUM_DATA_DIR": str(data_dir), "RINGSUM_FSYNC": "no"}
    return MemoryStorage(read_settings(environ, environ={}).storage_options(), clock=lambda: clock[0])


def copied_fixture(tmp_path: Path, mode: str) -> tuple[Path, dict, list[int]]:
    """The format-1 data dir of ``mode`` copied to ``tmp_path``, what it should answer,
    and a clock set to the moment it was written."""
    fixture = FIXTURES / f"datadir-v1-{mode}"
    expected = json.loads((fixture / "expected.json").read_text())
    data_dir = shutil.copytree(fixture, tmp_path / "data", ignore=shutil.ignore_patterns("expected.json"))
    return data_dir, expected, [expected["end_us"]]


def as_json(found: list[dict]) -> list[dict]:
    return json.loads(json.dumps(found))  # tuples to lists, as expected.json holds them


@pytest.mark.parametrize("refolded", [False, True], ids=["as-written", "after-a-checkpoint"])
@pytest.mark.parametrize("mode", ["tick", "exact"])
def test_a_format_1_data_dir_is_restored_with_the_sums_it_held(tmp_path, mode: str, refolded: bool) -> None:
    data_dir, expected, clock = copied_fixture(tmp_path, mode)
    end_us = expected["end_us"]
    storage = open_storage(data_dir, expected["settings"], clock)
    if refolded:
        try:
            # The retries of the writes the markers guard are answered from them, not counted.
            assert storage.record("guarded", 11, GUARDED) == GUARDED
            assert storage.record("guarded.later", 3, GUARDED_LATER) == GUARDED_LATER
            storage.delete("gone")  # a write, so that the checkpoint has a log to fold
            storage.checkpoint()  # this version folds the old files into a snapshot of its own
            assert not (data_dir / "journal-0000000002.log").exists()
        finally:
            storage.close()
        storage = open_storage(data_dir, expected["settings"], clock)
    try:
        assert as_json(readings(storage, clock, end_us)) == expected["readings"]
    finally:
        storage.close()


@pytest.mark.parametrize("refolded", [False, True], ids=["as-written", "after-a-checkpoint"])
@pytest.mark.parametrize("mode", ["tick", "exact"])
def test_format_1_kept_no_counts_so_none_is_made_up_until_its_ticks_age_out(
    tmp_path, mode: str, refolded: bool
) -> None:
    """Format 1's snapshot holds sums only: a window reaching a tick restored from it has
    no count (None), also after this version folds it into a snapshot of its own. Its
    log holds every event, so ticks replayed from it, and later ones, are counted."""
    data_dir, expected, clock = copied_fixture(tmp_path, mode)
    end_us = expected["end_us"]
    storage = open_storage(data_dir, expected["settings"], clock)
    if refolded:
        storage.delete("nothing")  # a write, so that the checkpoint has a log to fold
        storage.checkpoint()
        storage.close()
        storage = open_storage(data_dir, expected["settings"], clock)
    model_clock = [T0]
    model = open_storage(tmp_path / "model", expected["settings"], model_clock)  # never stopped
    write(model, model_clock)
    try:
        for after in READ_AFTER_S:
            clock[0] = model_clock[0] = end_us + after * SECOND
            for key in KEYS:
                for window_us in (None, 30 * SECOND):
                    found, counted = storage.window_stats(key, window_us), model.window_stats(key, window_us)
                    assert found.sum == counted.sum
                    if after >= 90 or window_us or key in ("busy.log", "batch.a", "guarded.later"):
                        assert found == counted, (after, key, window_us)  # no tick of the snapshot in it
            if after == 0:
                assert storage.window_stats("busy").count is None and storage.window_stats("sparse").count is None
                assert model.window_stats("busy").count  # what a ringsum that kept counts all along says
    finally:
        storage.close()
        model.close()
