"""Request smuggling through the shipped proxy configs (docs/api.md#http-framing:
nothing upgraded or tunnelled): nginx and Caddy in front of a real ``python app.py``, an attacker hiding
requests in bodies behind ``Upgrade`` and ambiguous framing, and legit clients on the
same proxy checking that every answer they get is their own."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests
from proxies import proxy
from serving import serving

pytestmark = pytest.mark.process

HIDDEN = (
    b"POST /metric/smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\nvalue=9",
    b"DELETE /metric/own.0 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
)
HEADS = (
    b"POST /metric/outer HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: %d\r\n\r\n",
    b"GET /metric/outer/sum HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: %d\r\n\r\n",
    b"POST /metric/outer HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
    b"Content-Length: %d\r\n\r\n",
    b"POST /metric/outer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nTransfer-Encoding: xchunked\r\n\r\n",
)


def attack(url: str, head: bytes, hidden: bytes) -> None:
    """One try: the head (naming the proxy's own site, or Caddy answers it itself), then,
    5 ms later in its own TCP segment, a body that is a request."""
    address = urlsplit(url)
    with contextlib.suppress(OSError), socket.create_connection((address.hostname, address.port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(head.replace(b"Host: x\r\n", b"Host: %s\r\n" % address.netloc.encode()) % len(hidden))
        time.sleep(0.005)
        sock.sendall(hidden)
        sock.settimeout(0.25)  # the proxy may keep the connection: its first answer is enough
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                pass


@pytest.mark.parametrize("kind", ["nginx", "caddy"])
def test_no_request_is_smuggled_through_the_shipped_proxy_configs(kind: str) -> None:
    with serving() as server, proxy(kind, server.port) as url:
        for index in range(4):
            requests.post(f"{server.url}/metric/own.{index}", data=f"value={index + 1}", timeout=5)
        wrong: list[str] = []
        answered = [0]
        stop = threading.Event()

        def legit(index: int) -> None:
            with requests.Session() as session:
                while not stop.is_set():
                    with contextlib.suppress(requests.RequestException):
                        answer = session.get(f"{url}/metric/own.{index}/sum", timeout=5)
                        answered[0] += 1
                        if answer.status_code != 200 or answer.json() != {"value": index + 1}:
                            wrong.append(f"client {index}: {answer.status_code} {answer.text[:80]}")

        clients = [threading.Thread(target=legit, args=(index,)) for index in range(4)]
        for client in clients:
            client.start()
        try:
            for _ in range(4):
                for head in HEADS:
                    for hidden in HIDDEN:
                        attack(url, head, hidden)
            time.sleep(0.5)  # anything the proxies still hold reaches ringsum, or never will
        finally:
            stop.set()
            for client in clients:
                client.join(timeout=30)
        assert server.total("smuggled") == 0
        assert server.total("own.0") == 1  # the hidden DELETE never ran
        reached = [
            line
            for line in server.output().splitlines()
            if '"POST /metric/outer' in line or '"GET /metric/outer' in line
        ]
        assert len(reached) >= 8, reached  # the attacks reached ringsum through the proxy (its access log)
        assert answered[0] > 20
        assert wrong == []
