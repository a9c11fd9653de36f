"""deploy/ as shipped: each file passes its own tool, its limits are ringsum's defaults
(read from both), and the proxies answer what they refuse as ringsum does.

- deploy/nginx.conf: ``nginx -t`` (Debian 12's nginx 1.22) inside a minimal http block,
  with a certificate made for the test; served through, over TLS too.
- deploy/Caddyfile: ``caddy validate`` (Debian 12's Caddy 2.6), its limits read from
  ``caddy adapt``'s JSON; served through.
- deploy/ringsum.service: ``systemd-analyze verify`` and ``systemd-analyze security``
  (exposure 3.0 at most); and what its sandbox forbids checked against a real ringsum:
  no system call outside its SystemCallFilter, no socket family outside
  RestrictAddressFamilies (strace), serving with write+execute memory refused
  (MemoryDenyWriteExecute, as the kernel's PR_SET_MDWE enforces it).

Without a tool the test skips, unless RINGSUM_REQUIRE_DEPLOY_TOOLS=1 (CI installs them);
nginx and Caddy follow RINGSUM_REQUIRE_PROXIES as in tests/proxies.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from proxies import proxy, require
from serving import ROOT, app_env, free_port, serving
from systemd_notify import notify_socket, receive

from ringsum import load_settings
from ringsum.config import DEFAULTS
from ringsum.http.wire import problem_json
from ringsum.version import __version__
from tools.processes import launch, stopped_afterwards
from tools.proxies import DEPLOY, NGINX_CERTIFICATE, NGINX_CERTIFICATE_KEY, nginx_http_block

pytestmark = pytest.mark.process

UNIT = DEPLOY / "ringsum.service"
DEFAULT = load_settings(environ={})
MAX_EXPOSURE = 3.0


def tool(program: str, package: str) -> str:
    return require(program, package, flag="RINGSUM_REQUIRE_DEPLOY_TOOLS")


def run(command: list[str], **options) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, **options)


# -- nginx ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for ringsum.example.com and its key."""
    openssl = tool("openssl", "openssl")
    folder = tmp_path_factory.mktemp("certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    done = run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-days", "2", "-subj", "/CN=ringsum.example.com", "-keyout", str(key), "-out", str(cert)),
        ]
    )
    assert done.returncode == 0, done.stderr
    folder.chmod(0o755)  # nginx's workers read it as nobody
    return cert, key


def nginx_directives(name: str, text: str | None = None) -> list[str]:
    """The values of ``name`` in deploy/nginx.conf (or ``text``), comments left out."""
    source = re.sub(r"#[^\n]*", "", text if text is not None else (DEPLOY / "nginx.conf").read_text())
    return re.findall(rf"(?m)^\s*{name}\s+([^;]+);", source)


def nginx_block(header: str) -> str:
    """The body of the block that starts with ``header`` (``upstream ringsum``)."""
    source = re.sub(r"#[^\n]*", "", (DEPLOY / "nginx.conf").read_text())
    start = source.index(header + " {") + len(header) + 2
    depth, index = 1, start
    while depth:
        depth += {"{": 1, "}": -1}.get(source[index], 0)
        index += 1
    return source[start : index - 1]


def nginx_seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", value.strip()).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[unit]


def nginx_bytes(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG])?", value.strip()).groups()  # type: ignore[union-attr]
    return int(number) * {"k": 1024, "m": 1024**2, "g": 1024**3, None: 1}[unit and unit.lower()]


def test_nginx_t_accepts_the_shipped_config(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    """Exactly as shipped, inside the http block of a minimal nginx.conf; only the
    certificate's paths point at one made for the test."""
    nginx = require("nginx")
    site = (DEPLOY / "nginx.conf").read_text()
    site = site.replace(NGINX_CERTIFICATE, str(certificate[0])).replace(NGINX_CERTIFICATE_KEY, str(certificate[1]))
    config = tmp_path / "nginx.conf"
    config.write_text(nginx_http_block(site, tmp_path))
    done = run([nginx, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(config)])
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def test_the_nginx_config_says_what_newer_nginx_writes() -> None:
    text = (DEPLOY / "nginx.conf").read_text()
    assert "443 ssl http2" in nginx_directives("listen", text)  # nginx 1.22 to 1.25.0
    assert re.search(r"#.*1\.25\.1", text) and re.search(r"#\s*http2 on;", text)


def test_nginx_limits_are_ringsums_defaults() -> None:
    assert [nginx_bytes(size) for size in nginx_directives("client_max_body_size")] == [DEFAULT.max_body]
    read_timeout_s, idle_timeout_s = DEFAULT.read_timeout_us / 1e6, DEFAULT.idle_timeout_us / 1e6
    for name in ("client_header_timeout", "client_body_timeout", "proxy_send_timeout"):
        assert [nginx_seconds(value) for value in nginx_directives(name)] == [read_timeout_s], name
    upstream = nginx_block("upstream ringsum")
    # Client side: idle keep-alive as ringsum's. Upstream side: nginx lets an idle
    # connection go before ringsum closes it, or a request could meet a closing socket.
    server_keepalive = [value for value in nginx_directives("keepalive_timeout") if value not in upstream]
    assert [nginx_seconds(value) for value in server_keepalive] == [idle_timeout_s]
    assert [nginx_seconds(value) for value in nginx_directives("keepalive_timeout", upstream)] == [
        pytest.approx(idle_timeout_s - 5)
    ]
    # ringsum answers or drops a request within RINGSUM_WORKER_TIMEOUT: nginx waits longer.
    assert nginx_seconds(nginx_directives("proxy_read_timeout")[0]) > DEFAULT.worker_timeout_us / 1e6


# -- Caddy ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def caddy_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment whose HOME and XDG folders are the test's: Caddy writes there."""
    home = str(tmp_path_factory.mktemp("caddy-home"))
    return {**os.environ, "HOME": home, "XDG_DATA_HOME": home, "XDG_CONFIG_HOME": home}


def test_caddy_validate_accepts_the_shipped_caddyfile(caddy_home: dict[str, str]) -> None:
    caddy = require("caddy")
    done = run([caddy, "validate", "--config", str(DEPLOY / "Caddyfile"), "--adapter", "caddyfile"], env=caddy_home)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Valid configuration" in done.stdout + done.stderr


@pytest.fixture(scope="module")
def caddy_json(caddy_home: dict[str, str]) -> dict:
    """The shipped Caddyfile as Caddy itself reads it (its JSON config)."""
    caddy = require("caddy")
    done = run([caddy, "adapt", "--config", str(DEPLOY / "Caddyfile"), "--adapter", "caddyfile"], env=caddy_home)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _handlers(node: object) -> Iterator[dict]:
    if isinstance(node, dict):
        if "handler" in node:
            yield node
        for value in node.values():
            yield from _handlers(value)
    elif isinstance(node, list):
        for value in node:
            yield from _handlers(value)


def test_caddy_limits_are_ringsums_defaults(caddy_json: dict) -> None:
    (server,) = caddy_json["apps"]["http"]["servers"].values()
    handlers = list(_handlers(server["routes"]))
    (body,) = [handler for handler in handlers if handler["handler"] == "request_body"]
    assert body["max_size"] == DEFAULT.max_body == 1_048_576  # 1MiB; "1MB" would be 1,000,000
    ns = 1_000_000_000
    assert server["read_timeout"] == server["read_header_timeout"] == DEFAULT.read_timeout_us * 1000
    assert server["idle_timeout"] == DEFAULT.idle_timeout_us * 1000
    (proxy_handler,) = [handler for handler in handlers if handler["handler"] == "reverse_proxy"]
    transport = proxy_handler["transport"]
    assert transport["keep_alive"]["idle_timeout"] < DEFAULT.idle_timeout_us * 1000
    assert transport["response_header_timeout"] > DEFAULT.worker_timeout_us * 1000
    assert [upstream["dial"] for upstream in proxy_handler["upstreams"]] == ["127.0.0.1:5000"]
    assert transport["dial_timeout"] <= 5 * ns


# -- through the proxies ----------------------------------------------------------------


def ringsums_own_413(server_url: str) -> dict:
    answer = requests.post(f"{server_url}/metric/big", data=b" " * (DEFAULT.max_body + 1), timeout=10)
    assert answer.status_code == 413
    return answer.json()


def chunked(size: int) -> Iterator[bytes]:
    """A body of ``size`` bytes sent chunked (no Content-Length): a JSON value, then spaces."""
    head = b'{"value": 1}'
    yield head
    left = size - len(head)
    while left > 0:
        part = min(left, 65_536)
        left -= part
        yield b" " * part


@pytest.mark.parametrize("kind", ["nginx", "caddy"])
def test_proxies_pass_the_limit_and_answer_over_it_as_ringsum_does(kind: str) -> None:
    with serving() as server, proxy(kind, server.port) as url:
        own = ringsums_own_413(server.url)
        at_limit = b'{"value": 1}'.ljust(DEFAULT.max_body)
        assert requests.post(f"{url}/metric/at.limit", data=at_limit, timeout=10).status_code == 200
        assert requests.post(f"{url}/metric/at.limit", data=chunked(DEFAULT.max_body), timeout=10).status_code == 200
        for body in (at_limit + b" ", b" " * (3 * DEFAULT.max_body), chunked(DEFAULT.max_body + 1)):
            answer = requests.post(f"{url}/metric/over.limit", data=body, timeout=10)
            assert answer.status_code == 413, answer.text[:200]
            assert answer.headers["Content-Type"].startswith("application/problem+json")
            assert answer.json() == own
        assert server.total("at.limit") == 2 and server.total("over.limit") == 0


@pytest.mark.parametrize("kind", ["nginx", "caddy"])
def test_proxies_answer_ringsum_down_with_a_503_problem(kind: str) -> None:
    with proxy(kind, free_port()) as url:
        for answer in (
            requests.get(f"{url}/metric/a/sum", timeout=10),
            requests.post(f"{url}/metric/a", data="value=1", timeout=10),
        ):
            assert answer.status_code == 503
            assert answer.headers["Content-Type"].startswith("application/problem+json")
            assert answer.headers["Retry-After"] == "1"
            assert answer.json() == json.loads(problem_json(503, answer.json()["detail"]))
            assert "retry" in answer.json()["detail"]


def test_nginx_redirects_plain_http_to_https_keeping_the_method() -> None:
    http_port = free_port()
    with proxy("nginx", free_port(), http_port=http_port):
        answer = requests.post(
            f"http://127.0.0.1:{http_port}/metric/visits?x=1",
            data="value=1",
            headers={"Host": "ringsum.example.com"},
            allow_redirects=False,
            timeout=10,
        )
        assert answer.status_code == 308  # a POST stays a POST, with its body
        assert answer.headers["Location"] == "https://ringsum.example.com/metric/visits?x=1"


@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")
def test_nginx_serves_ringsum_over_tls_as_shipped(certificate: tuple[Path, Path]) -> None:
    """The shipped HTTPS server itself (ssl, http2), with the test's certificate."""
    with serving() as server, proxy("nginx", server.port, tls=certificate) as url:
        assert url.startswith("https://")
        answer = requests.get(f"{url}/healthz", verify=False, timeout=10)  # self-signed
        assert answer.json() == {"status": "ok", "version": __version__}
        assert requests.post(f"{url}/metric/tls", json={"value": 4}, verify=False, timeout=10).status_code == 200
        assert server.total("tls") == 4


# -- the systemd unit ---------------------------------------------------------------------


def unit_settings(name: str, text: str | None = None) -> list[str]:
    return re.findall(rf"(?m)^{name}=(.*)$", text if text is not None else UNIT.read_text())


@pytest.fixture
def testable_unit(tmp_path: Path) -> Path:
    """The unit as shipped, its ExecStart's interpreter (/opt/ringsum/.venv/bin/python,
    which `make install` builds) swapped for one that exists here: verify checks it."""
    text = UNIT.read_text()
    assert "/opt/ringsum/.venv/bin/python" in text
    copy = tmp_path / "ringsum.service"
    copy.write_text(text.replace("/opt/ringsum/.venv/bin/python", sys.executable))
    return copy


def test_systemd_analyze_verify_accepts_the_unit(testable_unit: Path) -> None:
    analyze = tool("systemd-analyze", "systemd")
    done = run([analyze, "verify", str(testable_unit)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ringsum.service" not in done.stdout + done.stderr, done.stdout + done.stderr  # no warning about it


def test_systemd_analyze_security_rates_the_unit_exposure_3_at_most(testable_unit: Path) -> None:
    analyze = tool("systemd-analyze", "systemd")
    done = run([analyze, "security", "--offline=true", "--no-pager", str(testable_unit)])
    found = re.search(r"Overall exposure level for ringsum\.service: (\d+\.\d+)", done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    assert float(found[1]) <= MAX_EXPOSURE, done.stdout


def test_the_unit_waits_for_readiness_and_creates_private_files() -> None:
    assert unit_settings("Type") == ["notify"] and unit_settings("NotifyAccess") == ["main"]
    assert unit_settings("UMask") == ["0077"]
    assert unit_settings("MemoryDenyWriteExecute") == ["yes"]


def test_the_units_settings_are_accepted_and_its_address_is_the_proxies_upstream() -> None:
    environment = dict(value.split("=", 1) for value in unit_settings("Environment"))
    assert set(environment) <= set(DEFAULTS)
    settings = load_settings(environ=environment)
    (state,) = unit_settings("StateDirectory")
    assert settings.data_dir == f"/var/lib/{state}"
    (exec_start,) = unit_settings("ExecStart")
    address = re.search(r"--host (\S+) --port (\d+)", exec_start)
    assert address and f"{address[1]}:{address[2]}" == "127.0.0.1:5000"
    assert "server 127.0.0.1:5000;" in (DEPLOY / "nginx.conf").read_text()
    assert "reverse_proxy 127.0.0.1:5000" in (DEPLOY / "Caddyfile").read_text()


def test_the_units_install_steps_build_without_serving() -> None:
    comment = "\n".join(line for line in UNIT.read_text().splitlines() if line.startswith("#"))
    assert "make -C /opt/ringsum install" in comment
    assert not re.search(r"make\b[^\n]*\brun\b", comment)  # no server started as root in the foreground
    dry = run(["make", "--always-make", "--dry-run", "install"], cwd=ROOT)  # every step, built .venv or not
    assert dry.returncode == 0, dry.stderr
    assert "-r requirements.txt" in dry.stdout and "requirements-dev" not in dry.stdout
    assert "app.py" not in dry.stdout


def test_make_install_returns_without_starting_a_server(tmp_path: Path) -> None:
    """The real target, in a copy of the checkout whose .venv is already built (its
    requirements stamp is fresh): it compiles ringsum, then returns."""
    for name in ("Makefile", "requirements.txt", "app.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "ringsum", tmp_path / "ringsum", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    time.sleep(0.01)
    (venv / ".runtime").touch()
    done = run(["make", "--no-print-directory", "install"], cwd=tmp_path, env=app_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert list((tmp_path / "ringsum").glob("__pycache__/*.pyc"))
    assert "pip install" not in done.stdout


# -- the sandbox against a real ringsum -------------------------------------------------------


@functools.cache
def syscall_group(analyze: str, group: str) -> frozenset[str]:
    """Every system call a ``@group`` of systemd's names, groups within expanded."""
    done = run([analyze, "syscall-filter", group])
    assert done.returncode == 0, done.stderr
    names: set[str] = set()
    for line in done.stdout.splitlines()[1:]:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            names |= syscall_group(analyze, entry) if entry.startswith("@") else {entry}
    return frozenset(names)


def allowed_syscalls(analyze: str) -> frozenset[str]:
    """What the unit's SystemCallFilter= lines allow: the first an allow list, ~ lines deny."""
    allowed: set[str] | None = None
    for line in unit_settings("SystemCallFilter"):
        deny = line.startswith("~")
        names: set[str] = set()
        for entry in line.lstrip("~").split():
            names |= syscall_group(analyze, entry) if entry.startswith("@") else {entry}
        if deny:
            assert allowed is not None
            allowed -= names
        else:
            allowed = names if allowed is None else allowed | names
    assert allowed
    return frozenset(allowed)


def serve_through_a_services_life(command_prefix: list[str], data_dir: Path) -> str:
    """Run ``python app.py`` after ``command_prefix`` (a tracer, a wrapper) as systemd runs
    the unit (with NOTIFY_SOCKET), through what a service does: start, writes and reads,
    /metrics, a checkpoint folded in a child process, a reload (SIGHUP), a stop (SIGTERM,
    which must exit 0). Its output."""
    port = free_port()
    with notify_socket() as (notifications, path), contextlib.ExitStack() as stack:
        env = app_env({"RINGSUM_DATA_DIR": str(data_dir), "RINGSUM_CHECKPOINT": "1s", "NOTIFY_SOCKET": path})
        command = [*command_prefix, sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port)]
        server = stack.enter_context(stopped_afterwards(launch(command, env, port)))
        assert receive(notifications, 60).get("READY") == "1", server.output()
        requests.post(f"{server.url}/metric/life", json={"value": 2}, timeout=10).raise_for_status()
        requests.post(f"{server.url}/metric", json=[{"key": "life", "value": 3}], timeout=10).raise_for_status()
        assert requests.get(f"{server.url}/metrics", timeout=10).status_code == 200
        deadline = time.monotonic() + 30
        while not (data_dir / "snapshot").exists():  # the checkpoint's fold, in its own process
            assert time.monotonic() < deadline, f"no checkpoint was folded:\n{server.output()}"
            time.sleep(0.1)
        os.kill(_supervisor_pid(server.process.pid), signal.SIGHUP)
        assert receive(notifications, 60).get("RELOADING") == "1"
        assert receive(notifications, 60).get("READY") == "1"
        assert server.total("life") == 5  # the new worker read the data dir back
        os.kill(_supervisor_pid(server.process.pid), signal.SIGTERM)
        assert receive(notifications, 60).get("STOPPING") == "1"
        assert server.process.wait(60) == 0, server.output()
        return server.output()


def _supervisor_pid(launched: int) -> int:
    """ringsum's main process: the one launched, or the first child of a tracer."""
    children = Path(f"/proc/{launched}/task/{launched}/children").read_text().split()
    command = Path(f"/proc/{launched}/cmdline").read_bytes()
    return launched if b"app.py" in command and b"strace" not in command else int(children[0])


def test_ringsum_makes_no_system_call_the_units_filter_refuses(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", "systemd")
    strace = tool("strace", "strace")
    trace = tmp_path / "trace"
    serve_through_a_services_life([strace, "-f", "-qq", "-o", str(trace)], tmp_path / "data")
    calls = set(re.findall(r"(?m)^\d+\s+(?:<\.\.\. )?([a-z_0-9]+)[( ]", trace.read_text()))
    assert {"accept4", "execve", "fsync", "rt_sigtimedwait", "wait4"} <= calls  # it saw the service at work
    refused = calls - allowed_syscalls(analyze)
    assert not refused, f"SystemCallFilter= would refuse {sorted(refused)}"
    families = set(re.findall(r"\bsocket\((AF_[A-Z0-9]+)", trace.read_text()))
    (allowed_families,) = unit_settings("RestrictAddressFamilies")
    assert {"AF_INET", "AF_UNIX"} <= families <= set(allowed_families.split()), families  # AF_UNIX: sd_notify


def test_ringsum_serves_with_write_and_execute_memory_refused(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes: Python, uvloop and the checkpoint's child work without
    writable executable memory. The kernel's own switch (PR_SET_MDWE, Linux 6.3) refuses
    it to ringsum and every process it starts, as systemd's filter would."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(66, 0, 0, 0, 0) < 0:  # PR_GET_MDWE
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3 or later)")
    wrapper = tmp_path / "mdwe.py"
    wrapper.write_text(
        "import ctypes, os, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.prctl(65, 1, 0, 0, 0) == 0, ctypes.get_errno()  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN\n"
        "os.execv(sys.argv[1], sys.argv[1:])\n"
    )
    output = serve_through_a_services_life([sys.executable, str(wrapper)], tmp_path / "data")
    assert "checkpoint failed" not in output and "Traceback" not in output, output
