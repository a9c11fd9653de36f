"""The access log: one line per request the edge answered or refused, and the format of
every other log line (text, or JSON for log shippers).

An access line costs a request a few microseconds: it is built with one format call and
kept in a small buffer that is written to standard output in whole lines (at most 4 KiB
a write, so lines of several workers sharing one pipe never interleave) when full and
four times a second, not through ``logging`` (a record, a lock and a write per line).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from enum import Enum

_WRITE_MAX = 4000  # below PIPE_BUF: one write() of whole lines is never split by another process's


class LogFormat(Enum):
    TEXT = "text"
    JSON = "json"


class AccessLogMode(Enum):
    OFF = "off"
    TEXT = "text"
    JSON = "json"


class TrustedProxies:
    """The addresses whose ``X-Forwarded-For`` is believed (RINGSUM_TRUSTED_PROXIES)."""

    def __init__(self, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()) -> None:
        self.networks = tuple(networks)

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        return cls(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())

    def __str__(self) -> str:
        return ",".join(str(network) for network in self.networks)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrustedProxies) and self.networks == other.networks

    def __hash__(self) -> int:
        return hash(self.networks)

    def trusts(self, address: str) -> bool:
        if not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address: the peer's, or, when the peer is a trusted proxy, the
        right-most address of ``X-Forwarded-For`` that is not a trusted proxy itself."""
        if not forwarded_for or not self.trusts(peer):
            return peer
        for hop in reversed([hop.strip() for hop in forwarded_for.split(",")]):
            if hop and not self.trusts(hop):
                return hop
        return peer


class AccessLog:
    """Lines of answered and refused requests, buffered and written whole."""

    def __init__(self, mode: AccessLogMode, trusted: TrustedProxies, fd: int | None = None) -> None:
        self.json = mode is AccessLogMode.JSON
        self.trusted = trusted
        self.fd = sys.stdout.fileno() if fd is None else fd
        self.lines: list[str] = []
        self.size = 0
        self._second = -1
        self._stamp = ""

    def answered(
        self,
        peer: str,
        forwarded_for: str | None,
        request_line: str,
        method: str,
        path: str,
        status: int,
        size: int,
        seconds: float,
    ) -> None:
        client = self.trusted.client(peer, forwarded_for)
        if self.json:
            line = json.dumps(
                {
                    "time": self._time(),
                    "client": client,
                    "method": method,
                    "path": path,
                    "status": status,
                    "bytes": size,
                    "duration_s": round(seconds, 6),
                }
            )
        else:  # the Common Log Format, with the time taken in seconds after it
            line = f'{client} - - [{self._time()}] "{request_line}" {status} {size} {seconds:.6f}'
        self.lines.append(line)
        self.size += len(line) + 1
        if self.size >= _WRITE_MAX:
            self.flush()

    def flush(self) -> None:
        """Write the buffered lines, in whole lines of at most 4 KiB a write."""
        batch: list[str] = []
        size = 0
        for line in self.lines:
            if batch and size + len(line) + 1 > _WRITE_MAX:
                self._write(batch)
                batch, size = [], 0
            batch.append(line)
            size += len(line) + 1
        if batch:
            self._write(batch)
        self.lines = []
        self.size = 0

    def _write(self, lines: list[str]) -> None:
        data = ("\n".join(lines) + "\n").encode("utf-8", errors="replace")
        with contextlib.suppress(OSError):  # the log's reader went away: requests are still answered
            os.write(self.fd, data)

    def _time(self) -> str:
        """The time of the line, formatted once a second."""
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._stamp = (
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
                if self.json
                else time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))
            )
        return self._stamp


class JsonFormatter(logging.Formatter):
    """Every log line as one JSON object: time, level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(log_format: LogFormat) -> None:
    """The process's log lines (to standard error), as text or as JSON."""
    handler = logging.StreamHandler()
    if log_format is LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
