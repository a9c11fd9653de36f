"""The access log and the log format (RINGSUM_ACCESS_LOG, RINGSUM_LOG_FORMAT,
RINGSUM_TRUSTED_PROXIES) on a real ``python app.py``: one line per request answered or
refused, in the format asked for, naming the client a trusted proxy forwarded."""

from __future__ import annotations

import json
import re
import time

import pytest
import requests
from raw_http import exchange
from serving import Server, serving

pytestmark = pytest.mark.process


def lines_matching(server: Server, pattern: str, count: int = 1, timeout: float = 10.0) -> list[str]:
    """The output lines matching ``pattern`` once there are ``count`` (the log is written
    four times a second)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in server.output().splitlines() if re.search(pattern, line)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_every_request_answered_or_refused_is_one_common_log_line() -> None:
    with serving() as server:
        requests.post(f"{server.url}/metric/logged", data="value=3", timeout=5)
        exchange(server, b"NOT HTTP\r\n\r\n")
        (line,) = lines_matching(server, r'"POST /metric/logged HTTP/1.1"')
        assert re.fullmatch(
            r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "POST /metric/logged HTTP/1\.1" 200 2 \d+\.\d{6}',
            line,
        ), line
        (refused,) = lines_matching(server, r'"-" 400 ')
        assert refused.startswith("127.0.0.1 - - [")


def test_json_access_and_log_lines_for_log_shippers() -> None:
    with serving({"RINGSUM_ACCESS_LOG": "json", "RINGSUM_LOG_FORMAT": "json"}) as server:
        requests.get(f"{server.url}/metric/logged/sum", timeout=5)
        (line,) = lines_matching(server, r'"path": "/metric/logged/sum"')
        entry = json.loads(line)
        assert entry["client"] == "127.0.0.1" and entry["method"] == "GET" and entry["status"] == 200
        assert entry["bytes"] == len(b'{"value": 0}') and entry["duration_s"] >= 0
        (start,) = lines_matching(server, r"ringsum serving http")
        assert json.loads(start)["level"] == "INFO"


@pytest.mark.parametrize("trusted, client", [("127.0.0.0/8", "203.0.113.9"), ("", "127.0.0.1")])
def test_x_forwarded_for_names_the_client_only_from_a_trusted_proxy(trusted: str, client: str) -> None:
    with serving({"RINGSUM_TRUSTED_PROXIES": trusted}) as server:
        requests.get(
            f"{server.url}/metric/forwarded/sum", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}, timeout=5
        )
        (line,) = lines_matching(server, r'"GET /metric/forwarded/sum')
        assert line.startswith(f"{client} - - ["), line


def test_the_access_log_can_be_turned_off() -> None:
    with serving({"RINGSUM_ACCESS_LOG": "off"}) as server:
        requests.get(f"{server.url}/metric/quiet/sum", timeout=5)
        assert lines_matching(server, r"/metric/quiet/sum", timeout=1.0) == []
