"""The benchmark harness (``make bench``) keeps working and says what it does.

A ``--quick`` run once died at its very end, after minutes of measuring, on a KeyError in
the code that builds the table. ``python -m benchmarks --tiny`` runs steps end to end at
tiny sizes, through the same table and JSON code as a full run, in seconds: here for the
steps cheap enough for every test run (a simulated clock in a child process, a server
under wrk, the storage in process). Results go to an untracked file unless ``--save``,
and every benchmark command's ``--help`` says what it measures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from serving import ROOT

import benchmarks.__main__ as harness

pytestmark = pytest.mark.process

TINY_STEPS = {"memory": "memory_bound", "flat": "flat_reads", "sweep": "sweep"}


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        if os.environ.get("RINGSUM_REQUIRE_BENCH_TOOLS") == "1":
            pytest.fail("RINGSUM_REQUIRE_BENCH_TOOLS=1 but wrk is not installed", pytrace=False)
        pytest.skip("wrk is not installed (apt-get install wrk)")


def test_a_tiny_run_goes_through_to_the_table(tmp_path: Path) -> None:
    require_wrk()
    saved = harness.SAVED.read_bytes()
    output = tmp_path / "results.json"
    command = [sys.executable, "-m", "benchmarks", "--tiny", "--only", ",".join(TINY_STEPS), "--json", str(output)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    results = json.loads(output.read_text())
    assert set(TINY_STEPS.values()) <= results.keys()
    assert results["table"] in done.stdout
    rows = results["table"].splitlines()[2:]
    assert any("memory, one key" in row for row in rows)
    assert any("GET /sum p50: 1,000 vs 10 events" in row for row in rows)
    assert any("1,000 keys: one sweep" in row for row in rows)
    assert not [row for row in rows if "nan" in row.lower()]
    assert harness.SAVED.read_bytes() == saved  # the tracked results are written only with --save


def test_results_go_to_an_untracked_file_unless_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert harness.RESULTS.relative_to(ROOT).as_posix() + "/" in ignored
    assert harness._parser().parse_args([]).json == str(harness.RESULTS / "latest.json")
    monkeypatch.setattr(harness, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(harness, "SAVED", tmp_path / "saved.json")
    assert harness.main(["--tiny", "--only", "sweep", "--json", str(tmp_path / "results" / "latest.json")]) == 0
    assert not (tmp_path / "saved.json").exists()
    assert (
        harness.main(["--tiny", "--only", "sweep", "--json", str(tmp_path / "results" / "latest.json"), "--save"]) == 0
    )
    assert json.loads((tmp_path / "saved.json").read_text())["sweep"]["keys"] == 1_000
    assert (tmp_path / "saved.json").read_text() == (tmp_path / "results" / "latest.json").read_text()


def test_an_unknown_step_is_refused_naming_the_steps(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        harness.main(["--only", "single,nope"])
    assert exited.value.code == 2
    assert "no step nope" in capsys.readouterr().err


def _commands() -> list[str]:
    """Every benchmarks module with a command line."""
    folder = ROOT / "benchmarks"
    return sorted(path.stem for path in folder.glob("*.py") if 'if __name__ == "__main__":' in path.read_text())


@pytest.mark.parametrize("name", _commands())
def test_every_benchmark_command_says_what_it_measures(name: str) -> None:
    """In users' words: what is measured, not which issue asked for it."""
    # idempotency_cost.py runs as a file (PYTHONPATH picks whose ringsum it measures).
    command = ["benchmarks/idempotency_cost.py"] if name == "idempotency_cost" else ["-m", f"benchmarks.{name}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, *command, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    usage, _, rest = done.stdout.partition("\n\n")
    assert usage.startswith("usage: ")
    description = rest.split("\npositional arguments:")[0].split("\noptions:")[0]
    assert len(description.split()) >= 15, f"{name} --help says too little: {description!r}"
    assert not re.search(r"\bissues?\b|\bitem \d", description, flags=re.IGNORECASE), description


# A stand-in for ``python app.py`` and what a checkpoint adds: the supervisor forks a
# worker that holds the data (here 64 MiB), and the worker runs its checkpoint's fold as
# a child of its own, ``python -m ringsum.storage.checkpoint``, which holds little.
_WORKER = """
import subprocess, sys
held = bytearray(64 << 20)
fold = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", "ringsum.storage.checkpoint"])
print("ready", flush=True)
fold.wait()
"""
_SUPERVISOR = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {_WORKER!r}])"


def test_worker_rss_is_the_workers_not_a_checkpoint_folds() -> None:
    import time

    from tools.processes import descendants, launch

    server = launch([sys.executable, "-c", _SUPERVISOR], os.environ, port=0)
    try:
        deadline = time.monotonic() + 30
        while "ready" not in server.output() or len(descendants(server.process.pid)) < 2:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        assert server.worker_rss_bytes() >= 64 << 20  # a fold, the last descendant, holds ~10 MiB
    finally:
        server.kill()
