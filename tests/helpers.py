"""What many tests need: a clock that moves when told, a memory storage built as the
app builds it (and crashed as kill -9 leaves it), a sum read through the test client,
the check that an answer is the problem it should be."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import pytest

from ringsum.config import read_settings
from ringsum.storage.memory import MemoryStorage

PROBLEM = "application/problem+json"
# For a behaviour settled before any storage is called (routing, reading the body, the
# token): the test runs on memory only, as the storage cannot change its outcome. A
# smoke test on Redis and Cluster keeps each such family honest.
ON_MEMORY_ONLY = pytest.mark.parametrize("backend", ["memory"], indirect=True)
# RFC 9110 titles, where Python's table still has older names.
TITLES = {413: "Content Too Large", 414: "URI Too Long", 422: "Unprocessable Content"}


class ManualClock:
    """Epoch µs that move only when a test says so: cheaper than freezegun for 100,000
    steps, and the same in every thread (the storage's sweeper and checkpointer too).

    A wall clock with its monotonic partner (ringsum.core.clock.WindowClock reads both):
    ``advance`` (or setting ``now_us``) is time passing, ``step`` is the wall clock
    stepped (NTP, an operator) while no time passes."""

    def __init__(self, now_us: int) -> None:
        self.now_us = now_us
        self.stepped_us = 0

    def __call__(self) -> int:
        return self.now_us

    def monotonic(self) -> int:
        return self.now_us - self.stepped_us

    def advance(self, micros: int) -> None:
        self.now_us += micros

    def step(self, micros: int) -> None:
        """The wall clock jumps by ``micros`` (back when negative); no time passes."""
        self.now_us += micros
        self.stepped_us += micros


def memory_storage(clock: ManualClock, **settings: str) -> MemoryStorage:
    """Memory storage on ``clock`` with RINGSUM_* ``settings`` read as the app reads
    them; it keeps nothing unless RINGSUM_DATA_DIR is given."""
    options = read_settings({"RINGSUM_DATA_DIR": "", **settings}, environ={}).storage_options()
    return MemoryStorage(options, clock=clock)


def crash(storage: MemoryStorage) -> None:
    """What kill -9 leaves behind: the log as written so far, nothing flushed or closed
    on the way out, and the lock let go (by the kernel, when the process dies)."""
    storage._stopping.set()
    persistence = storage._persistence
    persistence._stopping.set()
    for thread in persistence._threads:
        thread.join()
    persistence._journal.close(sync=False)
    persistence._data_dir.release()


def total(client: Any, key: str = "k") -> int:
    """The window's sum of ``key``, through the test client."""
    response = client.get(f"/metric/{key}/sum")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["value"]


def assert_problem(response: Any, status: int, *words: str) -> dict:
    """``response`` is a problem+json of ``status`` whose detail mentions each of ``words``."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    problem = response.get_json()
    assert problem["type"] == "about:blank"
    assert problem["title"] == TITLES.get(status, HTTPStatus(status).phrase)
    assert problem["status"] == status
    assert isinstance(problem["detail"], str) and len(problem["detail"]) > 15
    for word in words:
        assert word in problem["detail"], problem["detail"]
    assert "Traceback" not in response.get_data(as_text=True)
    return problem


def in_threads(work: Callable[[int], object], count: int) -> None:
    """``work(0)`` to ``work(count - 1)``, each on a thread of its own, all at once;
    returns when every one has."""
    threads = [threading.Thread(target=work, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
