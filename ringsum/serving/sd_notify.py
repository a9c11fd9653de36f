"""Telling systemd how the service is doing (``Type=notify``), without a dependency.

systemd passes ``NOTIFY_SOCKET``, the path of a unix datagram socket (``@`` first: an
abstract one), and reads one datagram per notification: ``READY=1`` once the port is
bound and a worker serves (so ``systemctl start`` returns when requests are answered,
not when the process merely exists), ``RELOADING=1`` then ``READY=1`` around a reload,
``STOPPING=1`` on the way out, ``STATUS=...`` for ``systemctl status``. The protocol is
this one ``sendto``: see sd_notify(3).

Only the main process may notify (``NotifyAccess=main``): the supervisor takes the
address out of the environment at start, so workers and their children never see it.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """The supervisor's line to systemd; says nothing when not started by systemd."""

    def __init__(self, address: str | None) -> None:
        if address and address[0] == "@":
            address = "\0" + address[1:]
        self._address = address if address and address[0] in "/\0" else None

    @classmethod
    def from_environment(cls) -> Notifier:
        """The notifier for NOTIFY_SOCKET, which is removed from the environment."""
        return cls(os.environ.pop("NOTIFY_SOCKET", None))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *fields: str) -> None:
        """Send ``fields`` (``"READY=1"``, ``"STATUS=..."``) as one datagram. A failure is
        logged, never raised: systemd's bookkeeping must not stop the service."""
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as error:
            log.warning("ringsum: cannot notify systemd at NOTIFY_SOCKET: %s", error)
