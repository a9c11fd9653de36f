"""A stand-in for systemd's notification socket: what a ``Type=notify`` service started
with NOTIFY_SOCKET sends, as the test receives it."""

from __future__ import annotations

import contextlib
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

WAIT_S = 30.0


@contextlib.contextmanager
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound unix datagram socket, and its path (short: unix socket paths are limited)."""
    with tempfile.TemporaryDirectory(prefix="rs-", dir="/tmp") as folder:
        path = str(Path(folder) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            yield sock, path


def receive(sock: socket.socket, timeout: float = WAIT_S) -> dict[str, str]:
    """The next notification, as its fields (``{"READY": "1", "STATUS": ...}``)."""
    sock.settimeout(timeout)
    fields = sock.recv(4096).decode().split("\n")
    return dict(field.split("=", 1) for field in fields)
