"""systemd readiness (``Type=notify``): a real ``python app.py`` started with NOTIFY_SOCKET
pointing at a datagram socket the test holds, as systemd would start it. READY=1 comes
once the port answers, RELOADING=1 and READY=1 around a SIGHUP, STOPPING=1 on SIGTERM,
and only from the supervisor (NotifyAccess=main)."""

from __future__ import annotations

import signal
import socket
import tempfile
import time
from pathlib import Path

import pytest
import requests
from serving import free_port, run_app
from systemd_notify import notify_socket, receive

from ringsum.serving.sd_notify import Notifier
from tools.processes import stopped_afterwards

pytestmark = pytest.mark.process


def answers_at_once(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_ready_once_serving_reloading_around_sighup_stopping_on_sigterm() -> None:
    with notify_socket() as (sock, path):
        port = free_port()
        server = run_app(["--host", "127.0.0.1", "--port", str(port)], {"NOTIFY_SOCKET": path})
        with stopped_afterwards(server):
            ready = receive(sock)
            assert ready.get("READY") == "1", ready
            assert answers_at_once(server.url), "READY=1 came before the port answered"
            assert "ringsum serving http" in server.output()
            assert ready["STATUS"].startswith(f"ringsum serving http://127.0.0.1:{port} ")

            requests.post(f"{server.url}/metric/kept", json={"value": 5}, timeout=10).raise_for_status()
            server.process.send_signal(signal.SIGHUP)
            reloading = receive(sock)
            assert reloading.get("RELOADING") == "1" and int(reloading["MONOTONIC_USEC"]) > 0, reloading
            ready_again = receive(sock)
            assert ready_again.get("READY") == "1", ready_again
            assert requests.get(f"{server.url}/metric/kept/sum", timeout=1).json() == {"value": 5}

            assert server.stop() == 0
            assert receive(sock).get("STOPPING") == "1"
            sock.settimeout(0.2)
            with pytest.raises(TimeoutError):  # nothing else: no worker notified
                sock.recv(4096)


def test_an_abstract_socket_address_is_understood() -> None:
    name = f"ringsum-test-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        Notifier(f"@{name}").notify("READY=1", "STATUS=test")
        assert receive(sock, 5) == {"READY": "1", "STATUS": "test"}


def test_without_notify_socket_nothing_is_sent_and_a_dead_one_stops_nothing(caplog) -> None:
    Notifier(None).notify("READY=1")  # not under systemd: silently nothing
    with tempfile.TemporaryDirectory(prefix="rs-", dir="/tmp") as folder:
        Notifier(str(Path(folder) / "gone")).notify("READY=1")  # logged, not raised
    assert "cannot notify systemd" in caplog.text
