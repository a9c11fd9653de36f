"""The GC policy: what it takes out of collection passes, and that frozen keys still go."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator

import pytest

from ringsum.config import storage_options
from ringsum.core.window import RollingSum
from ringsum.serving import gc_policy
from ringsum.storage.memory import MemoryStorage

START_US = 1_800_000_000_000_000
KEYS = 2_000


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """Leave the test process's collector as it was."""
    yield
    gc_policy.stop()
    gc.unfreeze()


@pytest.fixture
def storage() -> Iterator[tuple[MemoryStorage, list[int]]]:
    now = [START_US]
    memory = MemoryStorage(storage_options(), clock=lambda: now[0])
    memory.record_many([(f"key.{index}", 1) for index in range(KEYS)])
    yield memory, now
    memory.close()


def rolling_sums_a_pass_would_walk() -> int:
    return sum(type(thing) is RollingSum for thing in gc.get_objects())


def test_after_a_freeze_no_collection_pass_walks_the_keys(storage) -> None:
    assert rolling_sums_a_pass_would_walk() >= KEYS
    gc_policy.freeze_survivors()
    assert rolling_sums_a_pass_would_walk() == 0
    assert gc.get_freeze_count() >= 2 * KEYS  # each key: its RollingSum and its list


def test_frozen_keys_are_still_freed_when_they_age_out(storage) -> None:
    memory, now = storage
    gc_policy.freeze_survivors()
    frozen = gc.get_freeze_count()
    now[0] += 3_700_000_000  # past the hour and its tick
    memory.sweep()
    assert memory.stats().keys == 0
    assert frozen - gc.get_freeze_count() >= 2 * KEYS


class Node:
    """Something that can sit in a reference cycle and be watched through a weak reference."""

    me: Node


def test_the_hourly_reclaim_collects_a_cycle_that_died_while_frozen() -> None:
    node = Node()
    node.me = node
    watch = weakref.ref(node)
    gc_policy.freeze_survivors()
    del node
    gc.collect()
    assert watch() is not None  # a cycle that dies while frozen stays: the price
    gc_policy.reclaim()
    assert watch() is None


def test_start_freezes_at_once_and_runs_one_thread_however_often_called(storage) -> None:
    gc_policy.start()
    gc_policy.start()
    assert rolling_sums_a_pass_would_walk() == 0
    assert [thread.name for thread in threading.enumerate()].count("ringsum-gc") == 1
    gc_policy.stop()
    assert "ringsum-gc" not in [thread.name for thread in threading.enumerate()]
