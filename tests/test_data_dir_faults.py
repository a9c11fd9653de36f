"""A data dir deleted, replaced or unwritable while ``python app.py`` serves from it
(docs/api.md#durability): writes become 503 and /readyz not ready within about a second, and nothing
acknowledged is lost to it."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import pytest
import requests
from serving import Server, serving, start_server

pytestmark = pytest.mark.process


def status_of(server: Server, key: str = "probe") -> int:
    return requests.post(f"{server.url}/metric/{key}", json={"value": 1}, timeout=10).status_code


def ready(server: Server) -> bool:
    return requests.get(f"{server.url}/readyz", timeout=10).status_code == 200


def within(seconds: float, condition, what: str) -> float:
    """How long ``condition`` took to hold; fails past ``seconds``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"not {what} after {seconds}s"
        time.sleep(0.02)
    return time.monotonic() - started


class Load:
    """Four threads posting 1 to one key until stopped: what was sent and acknowledged."""

    def __init__(self, server: Server, key: str = "load") -> None:
        self.sent = self.acknowledged = self.refused = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._post, args=(server, key)) for _ in range(4)]
        for thread in self._threads:
            thread.start()

    def _post(self, server: Server, key: str) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                with self._lock:
                    self.sent += 1
                try:
                    status = session.post(f"{server.url}/metric/{key}", json={"value": 1}, timeout=10).status_code
                except requests.RequestException:
                    return  # the server is gone
                with self._lock:
                    self.acknowledged += status == 200
                    self.refused += status == 503

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def test_a_data_dir_deleted_while_serving_loses_no_acknowledged_value(tmp_path) -> None:
    """Appends to a deleted segment go nowhere: the server notices, writes what memory
    holds to a new data dir at the same path, and a kill -9 later loses nothing."""
    data_dir = tmp_path / "data"
    env = {"RINGSUM_DATA_DIR": str(data_dir)}
    server = start_server(env)
    load = Load(server)
    try:
        within(15, lambda: load.acknowledged >= 300, "300 acknowledged posts")
        shutil.rmtree(data_dir)
        within(5, lambda: (data_dir / "snapshot").exists(), "a new data dir")
        acknowledged_then = load.acknowledged
        within(15, lambda: load.acknowledged >= acknowledged_then + 300, "300 more acknowledged posts")
    finally:
        server.kill()
        load.stop()
    output = server.output()
    assert f"the data dir {data_dir} was deleted" in output and "durability re-established" in output, output
    with serving(env) as again:
        assert load.acknowledged <= again.total("load") <= load.sent


def test_a_data_dir_replaced_while_serving_refuses_writes_and_readiness(tmp_path) -> None:
    data_dir = tmp_path / "data"
    with serving({"RINGSUM_DATA_DIR": str(data_dir)}) as server:
        assert status_of(server, "k") == 200
        data_dir.rename(tmp_path / "data.old")
        data_dir.mkdir()
        (data_dir / "snapshot").write_bytes(b"a backup put in place")  # another data dir, holding data
        took = within(3, lambda: status_of(server) == 503, "refusing writes")
        assert not ready(server)
        refused = requests.post(f"{server.url}/metric/k", json={"value": 1}, timeout=10)
        assert refused.headers["Retry-After"] == "1" and str(data_dir) in refused.json()["detail"]
        time.sleep(1.5)  # it is not written to, ever: restart ringsum to serve from it
        assert status_of(server) == 503 and not ready(server) and server.total("k") == 1
        assert (data_dir / "snapshot").read_bytes() == b"a backup put in place"
        assert "restart ringsum to serve from it" in server.output()
    assert took < 1.5, took


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr")
def test_a_log_that_cannot_be_written_refuses_writes_and_readiness_until_it_can(tmp_path) -> None:
    """Read-only files (here the open segment made immutable; disk full alike): every
    write is a 503, and /readyz says so within a second; once the file takes writes
    again, readiness comes back without a write."""
    data_dir = tmp_path / "data"
    with serving({"RINGSUM_DATA_DIR": str(data_dir)}) as server:
        assert status_of(server, "k") == 200
        segment = max(data_dir.glob("journal-*.log"))
        if subprocess.run(["chattr", "+i", str(segment)], capture_output=True).returncode:
            pytest.skip("chattr +i is not permitted here (needs root and a filesystem that has it)")
        try:
            assert status_of(server, "k") == 503
            took = within(3, lambda: not ready(server), "not ready")
            time.sleep(1.2)
            assert not ready(server)
        finally:
            subprocess.run(["chattr", "-i", str(segment)], check=True)
        within(5, lambda: ready(server), "ready again")
        assert status_of(server, "k") == 200
        assert server.total("k") == 2
    assert took < 1.5, took
