"""Real redis-server processes for the tests, on free loopback ports: never a shared server.

``RedisServer`` is one standalone server (start, stop, restart for fault tests);
``RedisClusterServers`` is three primaries joined by ``redis-cli --cluster create``.
The session fixtures start them once, when a test first needs them, and skip those
tests with the reason when Redis cannot run here, unless RINGSUM_REQUIRE_REDIS=1
(CI), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tools.processes import free_port

START_TIMEOUT_S = 15.0


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, made with the openssl command."""
    certificate, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(certificate)),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return certificate, key


class PortTaken(RuntimeError):
    """redis-server could not bind its port: another process holds it."""


class RedisServer:
    """One redis-server in its own directory, without persistence; ``tls``: TLS only."""

    def __init__(self, directory: Path, *extra_args: str, bus_port: bool = False, tls: bool = False) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port(also_free=10000 if bus_port else 0)
        self._bus_port = bus_port
        self._started_once = False
        self.extra_args = extra_args
        self.tls = self_signed_certificate(directory) if tls else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.tls:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls[0]}"
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        tls = {"ssl": True, "ssl_ca_certs": str(self.tls[0])} if self.tls else {}
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, **tls)

    def _listen_args(self) -> list[str]:
        if not self.tls:
            return ["--port", str(self.port)]
        certificate, key = map(str, self.tls)
        return [
            *("--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"),
            *("--tls-cert-file", certificate, "--tls-key-file", key, "--tls-ca-cert-file", certificate),
        ]

    def start(self) -> None:
        """Start and wait for PING. On a first start whose port another test process took
        meanwhile (pytest-xdist workers pick ports at once), pick another port."""
        for _ in range(3):
            try:
                self._start()
            except PortTaken:
                if self._started_once:
                    raise
                self.port = free_port(also_free=10000 if self._bus_port else 0)
            else:
                self._started_once = True
                return
        raise RuntimeError(f"redis-server found no free port: {self.log_tail()}")

    def _start(self) -> None:
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - the process owns it
        logged_before = log.tell()
        self.process = subprocess.Popen(
            [
                *("redis-server", *self._listen_args(), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.directory), *self.extra_args),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                said = (self.directory / "redis.log").read_bytes()[logged_before:].decode(errors="replace")
                raise (PortTaken if "already in use" in said else RuntimeError)(f"redis-server exited at start: {said}")
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.ConnectionError as error:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"redis-server did not answer PING in {START_TIMEOUT_S}s: {self.log_tail()}"
                    ) from error
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop and start on the same port: an empty server, as after a crash."""
        self.stop()
        self.start()

    def flushall(self) -> None:
        with self.client() as client:
            client.flushall()

    def log_tail(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"


class RedisClusterServers:
    """Three redis-server primaries in cluster mode, joined with ``redis-cli --cluster create``."""

    def __init__(self, directory: Path, size: int = 3, node_timeout_ms: int = 2000) -> None:
        """``node_timeout_ms``: how long a node may stay silent before the others mark it failed."""
        self.nodes = [
            RedisServer(
                directory / f"node{index}",
                *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                *("--cluster-node-timeout", str(node_timeout_ms)),
                bus_port=True,
            )
            for index in range(size)
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:2])

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [
                    *("redis-cli", "--cluster", "create", *(f"127.0.0.1:{node.port}" for node in self.nodes)),
                    *("--cluster-replicas", "0", "--cluster-yes"),
                ],
                check=True,
                capture_output=True,
                timeout=START_TIMEOUT_S,
            )
            self._wait_until_ok()
        except BaseException:
            self.stop()
            raise

    def _wait_until_ok(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            states = []
            for node in self.nodes:
                with node.client() as client:
                    states.append(client.execute_command("CLUSTER", "INFO").decode())
            if all("cluster_state:ok" in state for state in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not reach cluster_state:ok: {states[0]}")
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def flushall(self) -> None:
        for node in self.nodes:
            node.flushall()


def redis_missing() -> str | None:
    """Why Redis tests cannot run here, or None when they can."""
    for program in ("redis-server", "redis-cli"):
        if shutil.which(program) is None:
            return f"{program} is not installed (apt-get install redis-server redis-tools)"
    return None


def unavailable(reason: str) -> None:
    """Skip with ``reason``; in CI (RINGSUM_REQUIRE_REDIS=1) fail instead."""
    if os.environ.get("RINGSUM_REQUIRE_REDIS") == "1":
        pytest.fail(f"RINGSUM_REQUIRE_REDIS=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _started(server: RedisServer | RedisClusterServers, what: str) -> Iterator[RedisServer | RedisClusterServers]:
    missing = redis_missing()
    if missing:
        unavailable(missing)
    try:
        server.start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        unavailable(f"could not start {what}: {error}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A standalone redis-server for the whole session; tests flush it before use."""
    yield from _started(RedisServer(tmp_path_factory.mktemp("redis")), "redis-server")  # type: ignore[misc]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for one test alone, free to be stopped, hung and restarted."""
    yield from _started(RedisServer(tmp_path / "redis"), "redis-server")  # type: ignore[misc]


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A 3-primary Redis Cluster for the whole session; tests flush it before use."""
    yield from _started(RedisClusterServers(tmp_path_factory.mktemp("cluster")), "a Redis Cluster")  # type: ignore[misc]
