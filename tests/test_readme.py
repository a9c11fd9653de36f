"""Every command the README shows is run here as written, so the README cannot drift.

The README's ``sh`` blocks are read in order. A ``curl`` line runs against the server its
block started (``[SETTING=value ...] make run [ARGS="..."]``), or against one default
server shared by the blocks that start none; ``# -> expected`` after it is compared with
what curl printed: as JSON when it is JSON, as a prefix when it ends with ``...``, else
exactly. Every other command must be one this module knows how to run (``OTHER_COMMANDS``),
so a new command in the README without a test fails here.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import requests
from serving import ROOT, START_TIMEOUT_S, Server, app_env, free_port, wait_until_answering

from tools.processes import launch, stopped_afterwards

pytestmark = pytest.mark.process

README = ROOT / "README.md"
EXPECTS = "# -> "
_SERVER_LINE = re.compile(r'^(?P<env>(?:[A-Z_]+=\S*\s+)*)make run(?: ARGS="(?P<args>[^"]*)")?$')


@dataclass
class Block:
    server_line: str | None = None
    curls: list[tuple[str, str | None]] = field(default_factory=list)  # command, expected output
    others: list[str] = field(default_factory=list)


def readme_blocks() -> list[Block]:
    blocks = []
    for text in re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S):
        block = Block()
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            command, _, expected = line.partition(EXPECTS)
            command = command.rstrip()
            if command.startswith("curl "):
                block.curls.append((command, expected.strip() or None))
            elif _SERVER_LINE.match(command.split("  #")[0].strip()) and block.server_line is None:
                block.server_line = command.split("  #")[0].strip()
            else:
                block.others.append(command.split("  #")[0].strip())
        blocks.append(block)
    return blocks


def make_run(line: str, extra_env: dict[str, str] | None = None) -> AbstractContextManager[Server]:
    """``line`` (``[SETTING=value ...] make run [ARGS="..."]``) exactly, on a free port;
    stopped afterwards through its process group (make does not pass a SIGTERM on)."""
    match = _SERVER_LINE.match(line)
    assert match is not None, line
    env = dict(token.split("=", 1) for token in match["env"].split())
    port = free_port()
    args = f"{match['args'] or ''} --port {port}".strip()
    server = launch(
        ["make", "--no-print-directory", "run", f"ARGS={args}"], app_env({**env, **(extra_env or {})}), port
    )
    wait_until_answering(server, timeout=START_TIMEOUT_S * 4)  # a first `make run` may install
    return stopped_afterwards(server, whole_group=True)


def run_curl(command: str, server: Server) -> str:
    command = command.replace("localhost:5000", f"127.0.0.1:{server.port}")
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"{command}\n{done.stderr}"
    return done.stdout


def assert_output(command: str, output: str, expected: str | None) -> None:
    if expected is None:
        return
    if expected.endswith("..."):  # a prefix, compared without white space (JSON may be pretty-printed)
        assert "".join(output.split()).startswith("".join(expected[:-3].split())), f"{command}\n{output[:300]!r}"
        return
    try:
        wanted = json.loads(expected)
    except ValueError:
        assert output.strip() == expected, f"{command}\n{output!r}"
    else:
        assert json.loads(output) == wanted, f"{command}\n{output!r}"


def test_every_curl_in_the_readme_answers_as_shown(tmp_path: Path) -> None:
    """Followed in order, as a reader does: one data dir throughout (the reader's
    ``./data``), so what one server recorded, the next one starts with; and one server at
    a time, the README's own ``make run`` stopped before a block starts another, and
    started again for a later block that starts none."""
    blocks = [block for block in readme_blocks() if block.curls]
    assert sum(len(block.curls) for block in blocks) >= 15  # the parser found the README's examples
    data = {"RINGSUM_DATA_DIR": str(tmp_path / "data")}
    with contextlib.ExitStack() as default_server:
        default: Server | None = None
        for block in blocks:
            with contextlib.ExitStack() as own:
                if block.server_line is not None:
                    default_server.close()  # "stop the server started above first"
                    default = None
                    server = own.enter_context(make_run(block.server_line, data))
                else:
                    if default is None:
                        default = default_server.enter_context(make_run("make run", data))
                    server = default
                for command, expected in block.curls:
                    assert_output(command, run_curl(command, server), expected)


# -- the other commands ----------------------------------------------------------------


def _first_screen_make_run() -> None:
    with make_run("make run") as server:
        assert requests.get(f"{server.url}/healthz", timeout=10).json()["status"] == "ok"


def _make_test() -> None:
    """This very suite is `make test`: CI runs exactly that command. Here, that the target
    runs pytest (a dry run, so the suite does not run itself)."""
    done = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "-m pytest" in done.stdout


def _help() -> None:
    from ringsum.config import SETTINGS

    done = subprocess.run(
        [sys.executable, "app.py", "--help"], cwd=ROOT, env=app_env(), capture_output=True, text=True, check=True
    )
    for setting in SETTINGS:
        assert setting.name in done.stdout and setting.default in done.stdout, setting.name


def _redis_workers(redis_url: str) -> Callable[[str], None]:
    def run(line: str) -> None:
        with make_run(line.replace("redis://127.0.0.1:6379/0", redis_url)) as server:
            for value in range(1, 21):
                requests.post(f"{server.url}/metric/shared", json={"value": value}, timeout=10).raise_for_status()
            assert requests.get(f"{server.url}/metric/shared/sum", timeout=10).json() == {"value": 210}

    return run


def _redis_upgrade(line: str, redis_url: str) -> None:
    """A key as ringsum 0.2 left it (layout 1: a hash and a sorted set), upgraded."""
    client = redis.Redis.from_url(redis_url)
    slot = int(client.time()[0])
    client.set("ringsum:layout", 1)
    client.hset("ringsum:{shared}:h", mapping={"total": 5, str(slot): 5})
    client.zadd("ringsum:{shared}:z", {str(slot): slot})
    command = shlex.split(line.replace("redis://127.0.0.1:6379/0", redis_url))
    env = dict(token.split("=", 1) for token in command if "=" in token)
    program = [sys.executable if part.endswith("python") else part for part in command if "=" not in part]
    done = subprocess.run(program, cwd=ROOT, env=app_env(env), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "1 keys converted" in done.stdout, done.stderr
    assert client.get("ringsum:layout") == b"2" and client.exists("ringsum:{shared}:w")


OTHER_COMMANDS = {
    "make run": lambda _, __: _first_screen_make_run(),
    "make test": lambda _, __: _make_test(),
    ".venv/bin/python app.py --help": lambda _, __: _help(),
    'RINGSUM_STORAGE_URI=redis://127.0.0.1:6379/0 make run ARGS="--workers 4"': lambda line, redis: _redis_workers(
        redis
    )(line),
    "RINGSUM_STORAGE_URI=redis://127.0.0.1:6379/0 .venv/bin/python -m ringsum.storage.upgrade": _redis_upgrade,
}


def _other_commands() -> list[str]:
    found = []
    for block in readme_blocks():
        if block.server_line is not None and not block.curls:
            found.append(block.server_line)
        found += block.others
    return found


def test_the_readme_shows_no_command_this_module_cannot_run() -> None:
    assert sorted(set(_other_commands())) == sorted(OTHER_COMMANDS)


@pytest.mark.parametrize("command", sorted(OTHER_COMMANDS))
def test_every_other_readme_command_works(command: str, request: pytest.FixtureRequest) -> None:
    redis_url = request.getfixturevalue("redis_server").url if "redis://" in command else ""
    if redis_url:
        request.getfixturevalue("redis_server").flushall()
    OTHER_COMMANDS[command](command, redis_url)


def test_commands_quoted_in_the_prose_are_real() -> None:
    """Inline commands (`make run ARGS="--port 8000"`) parse as the block commands do."""
    inline = re.findall(r"`(make run ARGS=\"[^\"]*\")`", README.read_text())
    assert inline
    for command in inline:
        assert _SERVER_LINE.match(command), command
        assert shlex.split(command)[0] == "make"


def test_the_readme_settings_table_is_the_settings_table() -> None:
    """The README's table lists exactly the settings ``config.SETTINGS`` reads, with their defaults."""
    from ringsum.config import SETTINGS

    rows = re.findall(r"^\| `(RINGSUM_[A-Z_]+)` \| (`[^`]*`|unset) \|", README.read_text(), flags=re.M)
    assert rows == [(setting.name, f"`{setting.default}`" if setting.default else "unset") for setting in SETTINGS]
