"""What many tests need: a clock that moves when told, a sum read through the test
client, the check that an answer is the problem it should be."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

PROBLEM = "application/problem+json"
# RFC 9110 titles, where Python's table still has older names.
TITLES = {413: "Content Too Large", 414: "URI Too Long", 422: "Unprocessable Content"}


class ManualClock:
    """Epoch µs that move only when a test says so: cheaper than freezegun for 100,000
    steps, and the same in every thread (the storage's sweeper and checkpointer too)."""

    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us

    def advance(self, micros: int) -> None:
        self.now_us += micros


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
