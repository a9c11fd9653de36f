"""ringsum installed as a user installs it: a wheel built from this checkout, installed
with pip into a fresh virtual environment, run as the ``ringsum`` command from a
directory with no checkout in it. The wheel must hold every file the package reads
(the OpenAPI document, the dashboard, the Lua scripts) and depend on what
requirements.txt pins. About 20 s: building the wheel and installing its dependencies
need pip to reach the package index (CI does)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from serving import ROOT, app_env, free_port

from ringsum.version import __version__

pytestmark = pytest.mark.process

PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
# No bytecode compiled at install, also in the wheel's build environment: most of pip's CPU here.
PIP_ENV = {**os.environ, "PIP_NO_COMPILE": "1"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel .``: built as ``pip install .`` builds it, in an isolated build environment,
    from a copy holding only what the build reads (so it leaves nothing in the checkout)."""
    source, dist = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    for name in ("pyproject.toml", "requirements.txt", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "ringsum", source / "ringsum", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [*PIP, "wheel", "--no-deps", "--wheel-dir", str(dist), str(source)], env=PIP_ENV, check=True, timeout=180
    )
    (built,) = dist.glob("ringsum-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding the wheel and its dependencies, nothing else.
    Made without pip and filled by this pip (``--python``): seconds instead of ensurepip's ten."""
    home = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True, timeout=60)
    install = [*PIP, "--python", str(home / "bin" / "python"), "install", str(wheel)]
    subprocess.run(install, env=PIP_ENV, check=True, timeout=180)
    return home


def installed_env() -> dict[str, str]:
    """Settings as for any test server, and nothing that would find this checkout."""
    return {name: value for name, value in app_env().items() if name != "PYTHONPATH"}


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=installed_env(), capture_output=True, text=True, timeout=60)


def test_the_wheel_holds_every_file_the_package_reads(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "ringsum"
    data = [path for path in package.rglob("*") if path.is_file() and path.suffix not in {".py", ".pyc"}]
    assert data, "no package data found"
    for path in data:
        if "__pycache__" not in path.parts:
            assert path.relative_to(ROOT).as_posix() in names
    assert "ringsum/storage/lua/record.lua" in names and "ringsum/web/openapi.json" in names


def test_the_wheel_depends_on_what_requirements_txt_pins(wheel: Path) -> None:
    """End-of-line comments in requirements.txt stay out of the package metadata."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"ringsum-{__version__}.dist-info/METADATA").decode()
        entry_points = archive.read(f"ringsum-{__version__}.dist-info/entry_points.txt").decode()
    lines = (line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines())
    assert re.findall(r"^Requires-Dist: (.+)$", metadata, flags=re.MULTILINE) == [line for line in lines if line]
    assert re.search(r"^ringsum = ringsum\.serving\.cli:main$", entry_points, flags=re.MULTILINE)


def test_the_command_and_python_m_ringsum_say_the_version(venv: Path, tmp_path: Path) -> None:
    for command in ([str(venv / "bin" / "ringsum")], [str(venv / "bin" / "python"), "-m", "ringsum"]):
        done = run([*command, "--version"], tmp_path)
        assert (done.returncode, done.stdout) == (0, f"ringsum {__version__}\n"), done.stderr
    usage = run([str(venv / "bin" / "python"), "-m", "ringsum", "--help"], tmp_path).stdout
    assert usage.startswith("usage: python -m ringsum ") and "RINGSUM_WINDOW" in usage
    located = run([str(venv / "bin" / "python"), "-c", "import ringsum; print(ringsum.__file__)"], tmp_path)
    assert Path(located.stdout.strip()).is_relative_to(venv), "ringsum was imported from outside the venv"


@pytest.fixture
def installed_server(venv: Path, tmp_path: Path) -> Iterator[str]:
    """``ringsum --port P`` from the venv, started in an empty directory; its URL once it answers."""
    port = free_port()
    process = subprocess.Popen(
        [str(venv / "bin" / "ringsum"), "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=installed_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                requests.get(f"{url}/healthz", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "ringsum did not answer within 30 s"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=30)
    assert process.returncode == 0, errors


def test_the_ringsum_command_serves(installed_server: str) -> None:
    url = installed_server
    assert requests.post(f"{url}/metric/installed", json={"value": 3}, timeout=10).json() == {}
    assert requests.post(f"{url}/metric/installed", data={"value": "2.5"}, timeout=10).json() == {}
    assert requests.get(f"{url}/metric/installed/sum", timeout=10).json() == {"value": 6}
    assert requests.get(f"{url}/healthz", timeout=10).json() == {"status": "ok", "version": __version__}
    # The package data, read from the installed package: the dashboard and its files, the API document.
    page = requests.get(f"{url}/", timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert requests.get(f"{url}/dashboard/dashboard.js", timeout=10).status_code == 200
    assert requests.get(f"{url}/openapi.json", timeout=10).json()["info"]["version"] == __version__
