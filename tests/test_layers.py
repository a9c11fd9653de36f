"""The layers docs/code.md draws: each package imports only the ones below it, Flask
only in web (the contracts in .importlinter, which `make lint` runs too), and every
module of the package root is placed in a layer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_every_import_keeps_to_the_layers() -> None:
    run = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 kept, 0 broken" in run.stdout


def test_the_package_root_holds_only_what_belongs_to_no_layer() -> None:
    """A new module goes into a layer's package (and tools/relayout.py's LAYOUT)."""
    root = {path.stem for path in (ROOT / "ringsum").glob("*.py")}
    assert root <= {"__init__", "__main__", "config", "version"}
