"""The supervisor (docs/api.md#running): one owner per port and per data dir; reloads, dead workers
and a dead supervisor lose nothing and leave nothing serving. Real processes, real signals."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
from serving import Server, run_app, serving

pytestmark = pytest.mark.process


def post(server: Server, key: str, value: int) -> None:
    assert requests.post(f"{server.url}/metric/{key}", json={"value": value}, timeout=10).status_code == 200


def workers_of(server: Server) -> list[int]:
    pid = server.process.pid
    return [
        int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()
    ]


def wait_for(condition, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.05)


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_sighup_replaces_the_worker_and_loses_nothing(tmp_path) -> None:
    env = {"RINGSUM_DATA_DIR": str(tmp_path)}
    with serving(env) as server:
        for value in range(1, 101):
            post(server, "reloaded", value)
        before = workers_of(server)
        server.process.send_signal(signal.SIGHUP)
        # Requests sent through the reload wait in the backlog: none is refused.
        for _ in range(5):
            post(server, "reloaded", 1000)
        wait_for(lambda: workers_of(server) and workers_of(server) != before, what="a new worker")
        assert server.total("reloaded") == 5050 + 5000
        assert server.stop() == 0
    with serving(env) as server:
        assert server.total("reloaded") == 10050


def test_a_killed_worker_is_replaced_and_reads_everything_back(tmp_path) -> None:
    with serving({"RINGSUM_DATA_DIR": str(tmp_path)}) as server:
        for value in range(1, 51):
            post(server, "survivor", value)
        [worker] = workers_of(server)
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: workers_of(server) not in ([], [worker]), what="a replacement worker")
        assert server.total("survivor") == 1275
        assert server.process.poll() is None  # the supervisor carried on
        assert "starting another" in server.output()


def test_a_killed_supervisor_leaves_no_worker_serving(tmp_path) -> None:
    env = {"RINGSUM_DATA_DIR": str(tmp_path)}
    with serving(env) as server:
        post(server, "orphan", 7)
        [worker] = workers_of(server)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        wait_for(lambda: not Path(f"/proc/{worker}").exists() or _is_zombie(worker), what="the worker's exit")
        wait_for(lambda: port_is_free(server.port), timeout=5, what="the port freed")
        port = server.port
    with serving(env, port=port) as again:  # the same port and data dir, nothing split
        assert again.total("orphan") == 7


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_second_server_on_a_port_ringsum_holds_is_refused_with_one_line() -> None:
    with serving() as first:
        post(first, "first", 1)
        second = run_app(["--port", str(first.port)])
        assert second.exit_status() == 1
        output = second.output().strip()
        assert output.count("\n") == 0, output
        assert f"cannot listen on 127.0.0.1:{first.port}" in output and "in use" in output
        assert first.total("first") == 1  # untouched, and alone on its port


def test_a_second_server_on_a_data_dir_in_use_is_refused_with_one_line(tmp_path) -> None:
    env = {"RINGSUM_DATA_DIR": str(tmp_path)}
    with serving(env) as first:
        post(first, "owned", 3)
        second = run_app(["--port", "0"], env)
        assert second.exit_status() != 0
        output = second.output().strip()
        assert output.count("\n") == 0, output
        assert str(tmp_path) in output and "in use" in output
        post(first, "owned", 4)
        assert first.total("owned") == 7


def test_sigterm_finishes_requests_under_way_then_stops(tmp_path) -> None:
    env = {"RINGSUM_DATA_DIR": str(tmp_path)}
    answers: list[int] = []
    with serving(env, threads=2) as server:

        def post_many() -> None:
            with requests.Session() as session:
                for _ in range(200):
                    try:
                        answers.append(
                            session.post(f"{server.url}/metric/busy", data="value=1", timeout=10).status_code
                        )
                    except requests.ConnectionError:
                        return

        poster = threading.Thread(target=post_many)
        poster.start()
        wait_for(lambda: len(answers) >= 20, what="some answers")
        assert server.stop(signal.SIGTERM) == 0
        poster.join()
    with serving(env) as server:
        assert server.total("busy") == answers.count(200)  # every acknowledged value, no more
