"""docs/api.md#durability on a real ``python app.py``: what a crash, a damaged file or a second owner do to the data dir."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
import requests
from serving import Server, free_port, run_app, serving, start_server

pytestmark = pytest.mark.process


def post(session: requests.Session, server: Server, key: str, value: int) -> None:
    assert session.post(f"{server.url}/metric/{key}", json={"value": value}, timeout=10).status_code == 200


def post_batch(session: requests.Session, server: Server, events: list[tuple[str, int]]) -> None:
    body = [{"key": key, "value": value} for key, value in events]
    assert session.post(f"{server.url}/metric", json=body, timeout=30).status_code == 200


def wait_for(condition, what: str, timeout: float = 15.0) -> None:
    """Poll ``condition`` (the server works in real time: a checkpoint runs on its own clock)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def dir_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.iterdir() if file.is_file())


@pytest.mark.parametrize("resolution", ["1s", "0"], ids=["tick", "exact"])
def test_kill_9_of_the_process_group_loses_no_acknowledged_value(tmp_path, resolution: str) -> None:
    env = {"RINGSUM_DATA_DIR": str(tmp_path / "data"), "RINGSUM_RESOLUTION": resolution}
    expected: dict[str, int] = {}
    server = start_server(env)
    with requests.Session() as session:
        for n in range(300):
            post(session, server, f"single.{n % 10}", n)
            expected[f"single.{n % 10}"] = expected.get(f"single.{n % 10}", 0) + n
        for n in range(20):
            events = [(f"batch.{i % 5}", n * i - 7) for i in range(50)]
            post_batch(session, server, events)
            for key, value in events:
                expected[key] = expected.get(key, 0) + value
    server.kill()  # SIGKILL to the whole process group: nothing runs on the way out
    with serving(env) as again:
        assert {key: again.total(key) for key in expected} == expected
        assert "restored 15 keys" in again.output()


@pytest.mark.parametrize("fsync", ["everysec", "always"])
def test_kill_9_mid_load_from_eight_threads_keeps_every_acknowledged_value(tmp_path, fsync: str) -> None:
    """With ``always``, the answers of concurrent writers share fsyncs (group commit)."""
    env = {"RINGSUM_DATA_DIR": str(tmp_path / "data"), "RINGSUM_FSYNC": fsync}
    server = start_server(env)
    sent, acknowledged = [0] * 8, [0] * 8
    stop = threading.Event()

    def load(index: int) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                sent[index] += 1
                try:
                    response = session.post(f"{server.url}/metric/load", json={"value": 1}, timeout=10)
                except requests.RequestException:
                    return  # the server is gone
                if response.status_code == 200:
                    acknowledged[index] += 1

    threads = [threading.Thread(target=load, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    wait_for(lambda: sum(acknowledged) >= 500, "500 acknowledged posts")
    server.kill()
    stop.set()
    for thread in threads:
        thread.join()
    with serving(env) as again:
        restored = again.total("load")
    assert sum(acknowledged) <= restored <= sum(sent)


def written_with_a_checkpoint(data_dir: Path) -> dict[str, int]:
    """Values in a snapshot and in the log after it, then a clean stop; their sums."""
    env = {"RINGSUM_DATA_DIR": str(data_dir), "RINGSUM_CHECKPOINT": "1s"}
    with serving(env) as server, requests.Session() as session:
        post_batch(session, server, [("folded", n) for n in range(100)])
        wait_for(lambda: (data_dir / "snapshot").exists(), "the first checkpoint")
        for n in range(10):
            post(session, server, "logged", 1000 + n)
        assert server.stop(signal.SIGTERM) == 0
    return {"folded": sum(range(100)), "logged": sum(range(1000, 1010))}


def test_garbage_appended_to_every_file_of_the_data_dir_costs_nothing(tmp_path) -> None:
    data_dir = tmp_path / "data"
    expected = written_with_a_checkpoint(data_dir)
    damaged = sorted(path.name for path in data_dir.iterdir())
    for path in data_dir.iterdir():
        with path.open("ab") as file:
            file.write(b"\x00\x13garbage, as a bad disk or a stray write leaves it\xff" * 3)
    with serving({"RINGSUM_DATA_DIR": str(data_dir)}) as server:
        assert {key: server.total(key) for key in expected} == expected
        output = server.output()
    assert "snapshot" in damaged and any(name.startswith("journal-") for name in damaged)
    assert output.count("WARNING") == sum(name != "LOCK" for name in damaged), output


@pytest.mark.parametrize("torn", ["snapshot", "journal"])
def test_a_torn_tail_costs_at_most_the_record_it_cut(tmp_path, torn: str) -> None:
    data_dir = tmp_path / "data"
    expected = written_with_a_checkpoint(data_dir)
    files = sorted(data_dir.glob("journal-*.log" if torn == "journal" else "snapshot"))
    path = max(files, key=lambda file: (file.stat().st_size, file.name))  # the one holding records
    path.write_bytes(path.read_bytes()[:-5])
    with serving({"RINGSUM_DATA_DIR": str(data_dir)}) as server:
        restored = {key: server.total(key) for key in expected}
        metrics = requests.get(f"{server.url}/metrics", timeout=5).text
        output = server.output()
    assert restored["folded"] == expected["folded"]  # a torn snapshot end still holds every whole key
    assert restored["logged"] in (expected["logged"], expected["logged"] - 1009)  # at most the last post
    assert "WARNING" in output and f"damaged files kept aside (see the warnings above): {path.name}.damaged" in output
    assert (data_dir / f"{path.name}.damaged").exists()
    assert "ringsum_data_dir_damaged_files 1.0" in metrics


def test_the_default_data_dir_is_data_in_the_working_directory(tmp_path) -> None:
    env = {"RINGSUM_DATA_DIR": None}  # unset: the default
    with serving(env, cwd=tmp_path) as server:
        requests.post(f"{server.url}/metric/k", json={"value": 7}, timeout=5)
        assert server.stop() == 0
    assert {"LOCK", "journal-0000000001.log"} <= {path.name for path in (tmp_path / "data").iterdir()}
    with serving(env, cwd=tmp_path) as server:
        assert server.total("k") == 7


def test_an_empty_data_dir_setting_writes_nothing(tmp_path) -> None:
    with serving({"RINGSUM_DATA_DIR": ""}, cwd=tmp_path) as server:
        requests.post(f"{server.url}/metric/k", json={"value": 7}, timeout=5)
        assert server.stop() == 0
        output = server.output()
    assert list(tmp_path.iterdir()) == []
    assert "restored" not in output and "new data dir" not in output  # nothing claims to have been kept
    assert "no data dir (nothing kept across restarts)" in output  # and the start line says so
    with serving({"RINGSUM_DATA_DIR": ""}, cwd=tmp_path) as server:
        assert server.total("k") == 0


def second_owner(data_dir: Path) -> tuple[int, str, int]:
    """Start a second server on ``data_dir`` while a first serves from it: the second's
    exit status and output, and the first's sum afterwards."""
    env = {"RINGSUM_DATA_DIR": str(data_dir)}
    with serving(env) as first:
        requests.post(f"{first.url}/metric/k", json={"value": 3}, timeout=5)
        second = run_app(["--port", str(free_port())], env)
        status = second.exit_status()
        requests.post(f"{first.url}/metric/k", json={"value": 4}, timeout=5)
        return status, second.output(), first.total("k")


def test_a_second_process_on_the_same_data_dir_exits_and_leaves_the_first_alone(tmp_path) -> None:
    status, output, first_sum = second_owner(tmp_path / "data")
    assert status != 0, output
    assert first_sum == 7


def test_a_second_process_on_the_same_data_dir_says_so_in_one_line(tmp_path) -> None:
    status, output, _ = second_owner(tmp_path / "data")
    lines = [line for line in output.strip().splitlines() if "ringsum" in line or "Traceback" in line]
    assert status != 0 and "Traceback" not in output, output
    assert len(lines) == 1 and str(tmp_path / "data") in lines[0] and "in use" in lines[0], output


def test_disk_use_stays_bounded_by_checkpoints(tmp_path) -> None:
    data_dir = tmp_path / "data"
    env = {"RINGSUM_DATA_DIR": str(data_dir), "RINGSUM_CHECKPOINT": "1s"}
    batch = [{"key": "one", "value": 1}] * 10_000
    largest = 0
    with serving(env) as server, requests.Session() as session:
        for _ in range(40):  # 400,000 values over a few seconds: several checkpoints
            assert session.post(f"{server.url}/metric", json=batch, timeout=30).status_code == 200
            largest = max(largest, dir_bytes(data_dir))
            time.sleep(0.1)
        assert server.total("one") == 400_000
        wait_for(lambda: dir_bytes(data_dir) < 200_000, "the log to be folded into the snapshot")
    print(f"data dir: at most {largest:,} bytes during the load, {dir_bytes(data_dir):,} after")
    assert largest < 4_000_000  # about one interval of writes (about 1.3 MB here) plus the snapshot


def test_sigterm_then_restart_keeps_everything_and_stops_quickly(tmp_path) -> None:
    env = {"RINGSUM_DATA_DIR": str(tmp_path / "data"), "RINGSUM_RESOLUTION": "0"}
    with serving(env) as server, requests.Session() as session:
        for start in range(0, 200_000, 10_000):  # a batch is one time: one entry per key per batch
            post_batch(session, server, [(f"k{n % 1000}", n) for n in range(start, start + 10_000)])
        started = time.monotonic()
        assert server.stop(signal.SIGTERM) == 0
        stopped_in = time.monotonic() - started
    with serving(env) as server:
        assert server.total("k0") == sum(range(0, 200_000, 1000))
        assert "restored 1000 keys and 20000 entries" in server.output()
    assert stopped_in < 5  # nothing but an fsync to do on the way out (a generous bound)
