"""nginx and Caddy in front of a ringsum on this machine, each running the shipped
``deploy/`` config with only its addresses changed (TLS and the public name swapped for a
loopback port): what a client reaches through them is what a user's deployment would let
through. The tests (``tests/proxies.py``, which skip or fail when one is missing) and the
attack benchmark (``benchmarks/attacks.py``) both run them from here."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from .processes import ROOT, free_port

DEPLOY = ROOT / "deploy"
NGINX_CERTIFICATE = "/etc/ssl/certs/ringsum.example.com.pem"
NGINX_CERTIFICATE_KEY = "/etc/ssl/private/ringsum.example.com.key"


def installed(program: str) -> str | None:
    """Where ``program`` is, on the PATH or in the system directories a non-root PATH lacks."""
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")


def nginx_http_block(site: str, prefix: Path) -> str:
    """``site`` (server and upstream blocks) inside the http block a real nginx.conf has,
    with every file nginx writes kept under ``prefix``."""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"daemon off;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n"
        f"events {{ worker_connections 1024; }}\n"
        f"http {{\n    access_log off;\n{temp}\n{site}\n}}\n"
    )


def nginx_config(
    port: int,
    upstream_port: int,
    prefix: Path,
    *,
    http_port: int | None = None,
    tls: tuple[Path, Path] | None = None,
) -> str:
    """deploy/nginx.conf with its addresses swapped: its HTTPS server on ``port`` (plain
    HTTP, unless ``tls`` gives a certificate and its key), its redirecting plain-HTTP
    server on ``http_port`` (a free port when not given), IPv4 loopback only."""
    site = (DEPLOY / "nginx.conf").read_text()
    site = re.sub(r"\n[ \t]*listen \[::\][^;\n]*;", "", site)
    site = re.sub(r"\n([ \t]*)listen 80;", rf"\n\1listen 127.0.0.1:{http_port or free_port()};", site)
    if tls is None:
        site = re.sub(r"\n([ \t]*)listen 443 ssl[^;\n]*;", rf"\n\1listen 127.0.0.1:{port};", site)
        site = re.sub(r"\n[ \t]*ssl_certificate[^\n]*", "", site)
    else:
        site = re.sub(r"\n([ \t]*)listen 443 (ssl[^;\n]*);", rf"\n\1listen 127.0.0.1:{port} \2;", site)
        site = site.replace(NGINX_CERTIFICATE, str(tls[0])).replace(NGINX_CERTIFICATE_KEY, str(tls[1]))
    site = site.replace("127.0.0.1:5000", f"127.0.0.1:{upstream_port}")
    return nginx_http_block(site, prefix)


def caddy_config(port: int, upstream_port: int) -> str:
    """deploy/Caddyfile on plain HTTP at ``port`` (no certificate, no admin endpoint)."""
    shipped = (DEPLOY / "Caddyfile").read_text()
    site = re.sub(r"^ringsum\.example\.com \{", f"http://127.0.0.1:{port} {{", shipped, flags=re.MULTILINE)
    site = site.replace("127.0.0.1:5000", f"127.0.0.1:{upstream_port}")
    test_options = "\tadmin off\n\tauto_https off\n"
    if re.search(r"^\{$", site, flags=re.MULTILINE):  # the shipped global options block: add to it
        return re.sub(r"^\{\n", "{\n" + test_options, site, count=1, flags=re.MULTILINE)
    return "{\n" + test_options + "}\n" + site


@contextlib.contextmanager
def running(
    program: str,
    kind: str,
    upstream_port: int,
    *,
    http_port: int | None = None,
    tls: tuple[Path, Path] | None = None,
) -> Iterator[str]:
    """``program`` (nginx or Caddy, as ``kind`` says) in front of 127.0.0.1:``upstream_port``:
    its base URL (https:// when nginx is given ``tls``; ``http_port`` is nginx's
    redirecting port). Its output goes to a file, read only when it fails to start, so a
    long run never blocks on a full pipe."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix=f"ringsum-{kind}-") as folder:
        prefix = Path(folder)
        prefix.chmod(0o755)  # nginx's workers (nobody, when started as root) keep large bodies in its temp paths
        env = {**os.environ, "HOME": folder, "XDG_DATA_HOME": folder, "XDG_CONFIG_HOME": folder}
        if kind == "nginx":
            config = prefix / "nginx.conf"
            config.write_text(nginx_config(port, upstream_port, prefix, http_port=http_port, tls=tls))
            command = [program, "-p", folder, "-c", str(config)]
        else:
            config = prefix / "Caddyfile"
            config.write_text(caddy_config(port, upstream_port))
            command = [program, "run", "--config", str(config), "--adapter", "caddyfile"]
        output = prefix / "output.log"
        with output.open("wb") as sink:
            process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(requests.RequestException):
                    requests.get(f"{url}/healthz", timeout=2, verify=False)  # any answer: it listens
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{kind} did not start: {output.read_text(errors='replace')}")
                time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
