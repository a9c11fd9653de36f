"""Hung workers are replaced (docs/api.md#running, issue 21): a worker whose event loop is silent
past ``RINGSUM_WORKER_TIMEOUT`` is SIGKILLed and replaced with one warning line, and
loses nothing it acknowledged; a start is not held to the timeout, a request running on
the loop is; workers that keep dying are restarted after a growing delay, never given
up on. Real processes, real signals."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from serving import ROOT, Server, free_port, run_app, serving
from test_server import post, wait_for, workers_of

from ringsum import load_settings
from ringsum.config import ConfigError
from tools.processes import launch, stopped_afterwards, wait_until_listening

SILENT = "sent no heartbeat"


def gone(pid: int) -> bool:
    """Dead and reaped (a zombie still has its /proc entry)."""
    return not Path(f"/proc/{pid}").exists()


def alive_workers(server: Server) -> list[int]:
    """The supervisor's children that are not stopped (state T) nor dead."""
    running = []
    for pid in workers_of(server):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        if state not in "TtZX":
            running.append(pid)
    return running


@pytest.mark.process
def test_a_stopped_worker_is_replaced_after_the_timeout_and_loses_nothing(tmp_path) -> None:
    env = {"RINGSUM_DATA_DIR": str(tmp_path), "RINGSUM_WORKER_TIMEOUT": "2s"}
    with serving(env) as server:
        for value in range(1, 51):
            post(server, "kept", value)
        [stopped] = workers_of(server)
        os.kill(stopped, signal.SIGSTOP)
        started = time.monotonic()
        # Sent while the only worker is stopped: it waits in the backlog for the replacement.
        answer = requests.get(f"{server.url}/metric/kept/sum", timeout=30)
        waited = time.monotonic() - started
        assert answer.status_code == 200 and answer.json() == {"value": 1275}  # restored from the log
        assert 1.5 < waited < 10, waited
        wait_for(lambda: gone(stopped), what="the stopped worker reaped")
        assert workers_of(server) not in ([], [stopped])
        warnings = [line for line in server.output().splitlines() if SILENT in line]
        assert len(warnings) == 1, server.output()
        assert f"worker {stopped} " in warnings[0] and "RINGSUM_WORKER_TIMEOUT=2s" in warnings[0]
        assert "ended (" not in server.output()  # one line per hung worker, not two
        post(server, "kept", 1)
        assert server.total("kept") == 1276
        assert server.stop() == 0


@pytest.mark.process
def test_a_stopped_worker_of_two_on_redis_is_replaced_while_the_other_serves(redis_server) -> None:
    redis_server.flushall()
    env = {"RINGSUM_STORAGE_URI": redis_server.url, "RINGSUM_WORKER_TIMEOUT": "2s", "RINGSUM_REDIS_TIMEOUT": "5s"}
    with serving(env, workers=2) as server:
        wait_for(lambda: len(workers_of(server)) == 2, what="two workers")
        for value in range(1, 51):
            post(server, "shared", value)
        stopped, other = workers_of(server)
        os.kill(stopped, signal.SIGSTOP)
        started = time.monotonic()

        def post_on_a_new_connection(value: int) -> int:
            return requests.post(f"{server.url}/metric/shared", json={"value": value}, timeout=30).status_code

        with ThreadPoolExecutor(4) as pool:  # served by the other worker, or waiting for the replacement
            assert list(pool.map(post_on_a_new_connection, [100] * 20)) == [200] * 20
        wait_for(lambda: gone(stopped) and len(alive_workers(server)) == 2, what="a replacement")
        assert time.monotonic() - started < 15
        assert other in workers_of(server)  # the one that answered was never touched
        assert server.total("shared") == 1275 + 2000
        [warning] = [line for line in server.output().splitlines() if SILENT in line]
        assert f"worker {stopped} " in warning


@pytest.mark.process
def test_a_worker_killed_again_and_again_is_restarted_after_growing_delays_and_sigterm_still_stops(
    tmp_path,
) -> None:
    with serving({"RINGSUM_DATA_DIR": str(tmp_path)}) as server:
        post(server, "steady", 5)
        for _ in range(7):  # the old rule stopped the supervisor at the 6th death in 30 s
            [worker] = workers_of(server)
            os.kill(worker, signal.SIGKILL)
            wait_for(lambda worker=worker: workers_of(server) not in ([], [worker]), what="a replacement")
            assert server.total("steady") == 5  # it answers (and lost nothing)
        assert server.process.poll() is None
        delays = re.findall(r"ended \(killed by SIGKILL, .*; starting another(?: in (\S+)s)?", server.output())
        assert delays == ["", "0.1", "0.2", "0.4", "0.8", "1.6", "3.2"], server.output()  # the first at once
        [worker] = workers_of(server)
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: "starting another in 6.4s" in server.output(), what="the eighth restart's delay")
        started = time.monotonic()
        assert server.stop() == 0  # during the wait: at once, not after it
        assert time.monotonic() - started < 3


def test_the_worker_timeout_is_a_duration_from_1s_to_1d_or_0_for_never() -> None:
    assert load_settings(environ={}).worker_timeout_us == 30_000_000
    assert load_settings({"RINGSUM_WORKER_TIMEOUT": "2s"}, environ={}).worker_timeout_us == 2_000_000
    assert load_settings({"RINGSUM_WORKER_TIMEOUT": "0"}, environ={}).worker_timeout_us == 0
    for bad in ("500ms", "2d", "soon", "-1s"):
        with pytest.raises(ConfigError) as raised:
            load_settings({"RINGSUM_WORKER_TIMEOUT": bad}, environ={})
        assert raised.value.name == "RINGSUM_WORKER_TIMEOUT" and "from 1s to 1d" in str(raised.value)


@pytest.mark.process
def test_python_app_py_refuses_a_bad_worker_timeout_with_one_line() -> None:
    server = run_app(["--port", "1"], {"RINGSUM_WORKER_TIMEOUT": "100ms"})
    status, output = server.exit_status(), server.output()
    assert status == 2 and len(output.strip().splitlines()) == 1, output
    assert "RINGSUM_WORKER_TIMEOUT" in output and "Traceback" not in output


def stub_server(timeout_s: float, start_s: float = 0.0) -> Server:
    """tests/stub_server.py: the supervisor serving an app slow to build, with /sleep/<s>."""
    port = free_port()
    argv = [sys.executable, str(ROOT / "tests" / "stub_server.py"), "--port", str(port), "--timeout-s", str(timeout_s)]
    server = launch([*argv, "--start-s", str(start_s)], dict(os.environ), port)
    wait_until_listening(server, 30.0, lambda server: requests.get(server.url, timeout=30).status_code == 200)
    return server


@pytest.mark.process
def test_a_worker_slow_to_start_is_not_held_to_the_timeout() -> None:
    with stopped_afterwards(stub_server(timeout_s=1, start_s=2.5)) as server:
        [worker] = workers_of(server)
        assert requests.get(server.url, timeout=10).text == str(worker)
        assert SILENT not in server.output()


@pytest.mark.process
def test_a_request_running_on_the_loop_longer_than_the_timeout_gets_its_worker_replaced() -> None:
    with stopped_afterwards(stub_server(timeout_s=1)) as server:
        [worker] = workers_of(server)
        with pytest.raises(requests.ConnectionError):  # the worker died under it: no answer
            requests.get(f"{server.url}/sleep/5", timeout=30)
        assert f"worker {worker} {SILENT}" in server.output()
        assert requests.get(server.url, timeout=10).text != str(worker)
        assert requests.get(f"{server.url}/sleep/0.3", timeout=10).status_code == 200  # within the timeout: fine
