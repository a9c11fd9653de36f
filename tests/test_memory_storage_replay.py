"""Crash anywhere, restart: the sums are those of a storage that never crashed, minus only
the writes whose log record the crash cut (which were never acknowledged)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from helpers import ManualClock, crash, memory_storage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringsum.storage import file_header
from ringsum.storage.memory import MemoryStorage

T0 = 1_780_000_000_000_000
KEYS = st.sampled_from(["a", "b", "c.d", "e"])
VALUES = st.integers(-(2**53 - 1), 2**53 - 1)
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("record"), KEYS, VALUES),
        st.tuples(st.just("batch"), st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=4)),
        st.tuples(st.just("delete"), KEYS),
        st.tuples(st.just("advance"), st.integers(0, 40_000_000)),
        st.tuples(st.just("checkpoint")) | st.tuples(st.just("advance"), st.integers(0, 3)),  # half as often
    ),
    max_size=25,
)


def storage_on(clock: ManualClock, resolution: str, data_dir: str) -> MemoryStorage:
    return memory_storage(
        clock, RINGSUM_WINDOW="1m", RINGSUM_RESOLUTION=resolution, RINGSUM_DATA_DIR=data_dir, RINGSUM_FSYNC="no"
    )


def apply(storage: MemoryStorage, operation: tuple) -> None:
    name, *args = operation
    if name == "record":
        storage.record(*args)
    elif name == "batch":
        storage.record_many(args[0])
    elif name == "delete":
        storage.delete(*args)
    elif name == "checkpoint":
        storage.checkpoint()


def newest_segment(data_dir: str) -> Path:
    return sorted(Path(data_dir).glob("journal-*.log"))[-1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    operations=OPERATIONS,
    resolution=st.sampled_from(["0", "1s"]),
    cut_fraction=st.floats(0, 1),
    down_us=st.integers(0, 70_000_000),
)
def test_a_crash_at_any_byte_loses_only_the_writes_it_cut(
    operations: list[tuple], resolution: str, cut_fraction: float, down_us: int
) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        clock = ManualClock(T0)
        storage = storage_on(clock, resolution, data_dir)
        record_ends: list[tuple[int, int]] = []  # (index of a write, end of its record in the newest segment)
        for index, operation in enumerate(operations):
            if operation[0] == "advance":
                clock.now_us += operation[1]
                continue
            apply(storage, operation)
            if operation[0] == "checkpoint":
                record_ends = []  # the segments before are folded: a cut in the newest one cannot reach them
            else:
                record_ends.append((index, newest_segment(data_dir).stat().st_size))
        crash(storage)
        segment = newest_segment(data_dir)
        size = segment.stat().st_size
        # A segment gets its name only once its header is on the disk: a crash cuts records.
        cut = file_header.SIZE + round(cut_fraction * (size - file_header.SIZE))
        os.truncate(segment, cut)
        lost = {index for index, end in record_ends if end > cut}

        clock.now_us += down_us
        restarted = storage_on(clock, resolution, data_dir)
        model_clock = ManualClock(T0)
        model = storage_on(model_clock, resolution, "")  # never crashed, never wrote a file
        try:
            for index, operation in enumerate(operations):
                if operation[0] == "advance":
                    model_clock.now_us += operation[1]
                elif index not in lost:
                    apply(model, operation)
            model_clock.now_us = clock.now_us
            for key in ["a", "b", "c.d", "e"]:
                assert restarted.total(key) == model.total(key), key
                assert restarted.total(key, 10_000_000) == model.total(key, 10_000_000), key
        finally:
            restarted.close()
            model.close()
