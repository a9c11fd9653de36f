"""One owner per data dir whatever happens to its files, and a start line that never
claims to serve before the data dir is held and read back (docs/api.md#running, docs/api.md#durability), on real
``python app.py`` processes."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
import requests
from serving import Server, free_port, run_app, serving, wait_until_answering

pytestmark = pytest.mark.process


def refusal_line(server: Server) -> str:
    """The one line a refused start said (no traceback, no "serving")."""
    status, output = server.exit_status(), server.output()
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert status != 0, output
    assert "serving" not in output and "Traceback" not in output, output
    assert len(lines) == 1, output
    return lines[0]


def test_a_second_server_is_refused_even_after_the_lock_file_was_deleted(tmp_path) -> None:
    data_dir = tmp_path / "data"
    env = {"RINGSUM_DATA_DIR": str(data_dir)}
    with serving(env) as first:
        assert requests.post(f"{first.url}/metric/k", json={"value": 3}, timeout=5).status_code == 200
        (data_dir / "LOCK").unlink()  # the directory itself is locked: no file operation takes it away
        line = refusal_line(run_app(["--port", str(free_port())], env))
        assert requests.post(f"{first.url}/metric/k", json={"value": 4}, timeout=5).status_code == 200
        assert first.total("k") == 7
    assert "in use" in line and str(data_dir) in line


def test_two_servers_started_at_the_same_instant_exactly_one_serves(tmp_path) -> None:
    env = {"RINGSUM_DATA_DIR": str(tmp_path / "data")}
    servers = [run_app(["--port", str(free_port())], env) for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        while all(server.process.poll() is None for server in servers):
            assert time.monotonic() < deadline, [server.output() for server in servers]
            time.sleep(0.05)
        loser = next(server for server in servers if server.process.poll() is not None)
        winner = next(server for server in servers if server is not loser)
        line = refusal_line(loser)
        assert "in use" in line
        wait_until_answering(winner)
        assert requests.post(f"{winner.url}/metric/k", json={"value": 5}, timeout=5).status_code == 200
        assert winner.total("k") == 5
    finally:
        for server in servers:
            server.kill()


def test_a_start_refused_before_serving_says_no_serving_line(tmp_path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "snapshot").write_bytes(struct.pack("<8sH", b"RINGSUMS", 99) + bytes(16))  # a newer ringsum's
    server = run_app(["--port", str(free_port())], {"RINGSUM_DATA_DIR": str(data_dir)})
    status, output = server.exit_status(), server.output()
    assert status != 0 and "serving" not in output, output
    assert f"{data_dir / 'snapshot'} has format version 99" in output


def test_a_start_refused_while_restoring_says_no_serving_line(tmp_path) -> None:
    """What only reading the whole snapshot finds (its covers damaged at both ends) is
    found by the worker, after the port is bound: still no "serving" line."""
    data_dir = tmp_path / "data"
    with serving({"RINGSUM_DATA_DIR": str(data_dir), "RINGSUM_CHECKPOINT": "1s"}) as server:
        assert requests.post(f"{server.url}/metric/k", json={"value": 1}, timeout=5).status_code == 200
        deadline = time.monotonic() + 15
        while not (data_dir / "snapshot").exists():
            assert time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.05)
    snapshot = data_dir / "snapshot"
    data = bytearray(snapshot.read_bytes())
    data[12] ^= 0x01
    snapshot.write_bytes(bytes(data[:-3]))
    server = run_app(["--port", str(free_port())], {"RINGSUM_DATA_DIR": str(data_dir)})
    status, output = server.exit_status(), server.output()
    assert status != 0 and "serving" not in output, output
    assert "which log segments it holds cannot be known" in output and "--repair" in output


def test_the_start_line_comes_after_the_data_dir_is_read_back(tmp_path) -> None:
    data_dir = tmp_path / "data"
    with serving({"RINGSUM_DATA_DIR": str(data_dir)}) as server:
        output = server.output()
    assert output.index("new data dir") < output.index("ringsum serving http")


def test_a_reload_hands_the_data_dir_over_with_no_gap_for_another_server(tmp_path) -> None:
    """The supervisor holds the data dir for as long as it serves: while a SIGHUP replaces
    its worker, a second server started on the same dir is refused all the same."""
    import signal

    env = {"RINGSUM_DATA_DIR": str(tmp_path / "data")}
    with serving(env) as first:
        assert requests.post(f"{first.url}/metric/k", json={"value": 1}, timeout=5).status_code == 200
        first.process.send_signal(signal.SIGHUP)
        intruders = [run_app(["--port", str(free_port())], env) for _ in range(3)]
        for intruder in intruders:
            assert "in use" in refusal_line(intruder)
        assert first.total("k") == 1
        assert Path(tmp_path / "data").is_dir()
