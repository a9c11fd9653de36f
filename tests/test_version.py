"""The version: written once (ringsum/version.py), and everything that says it agrees:
the package metadata pyproject.toml builds, ``python app.py --version`` (and ``ringsum``'s), ``GET /healthz``,
``ringsum_build_info`` in /metrics, the OpenAPI document and the CHANGELOG's newest entry."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import warnings

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from serving import ROOT, app_env

from ringsum.version import __version__


def test_the_version_is_a_release_number() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_pyproject_takes_the_version_from_the_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]  # written nowhere else
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ringsum.version.__version__"}


def test_the_package_metadata_a_build_writes_is_this_version() -> None:
    """What `pip install .` and a wheel would call this ringsum, as setuptools reads it."""
    pyprojecttoml = pytest.importorskip("setuptools.config.pyprojecttoml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # setuptools calls [tool.setuptools] "beta"
        configuration = pyprojecttoml.read_configuration(ROOT / "pyproject.toml")
    assert configuration["project"]["version"] == __version__


def test_the_changelogs_newest_entry_is_this_version() -> None:
    newest = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), flags=re.MULTILINE)
    assert newest is not None and newest[1] == __version__


def test_the_openapi_document_is_this_version() -> None:
    assert json.loads((ROOT / "ringsum" / "web" / "openapi.json").read_text())["info"]["version"] == __version__


@pytest.mark.parametrize("command", [["app.py"], ["-m", "ringsum"]], ids=["python app.py", "python -m ringsum"])
def test_the_command_line_version_prints_it(command: list[str]) -> None:
    """Both as here, in a checkout; the installed ``ringsum`` command: tests/test_install.py."""
    done = subprocess.run(
        [sys.executable, *command, "--version"], cwd=ROOT, env=app_env(), capture_output=True, text=True, check=True
    )
    assert done.stdout == f"ringsum {__version__}\n"


def test_healthz_says_it(make_memory_app) -> None:
    app: Flask = make_memory_app()
    assert app.test_client().get("/healthz").get_json() == {"status": "ok", "version": __version__}


def test_metrics_say_it_as_build_info(make_memory_app) -> None:
    app: Flask = make_memory_app()
    text = app.test_client().get("/metrics").get_data(as_text=True)
    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples = families["ringsum_build_info"].samples
    assert [(sample.labels, sample.value) for sample in samples] == [({"version": __version__}, 1.0)]
