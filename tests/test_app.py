"""``python app.py`` as a user runs it (docs/api.md#running): a real server process on a free port."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from serving import ROOT, app_env, run_app, serving

pytestmark = pytest.mark.process


def test_it_serves_the_api_on_a_production_server() -> None:
    with serving() as server:
        answer = requests.post(f"{server.url}/metric/visits", data='{"value": 3}', timeout=5)  # as curl -d sends it
        assert answer.status_code == 200 and answer.json() == {}
        assert requests.post(f"{server.url}/metric/visits/", data={"value": "2.5"}, timeout=5).status_code == 200
        assert server.total("visits") == 6
        assert "werkzeug" not in answer.headers.get("Server", "").lower()  # not Flask's development server
        refused = requests.post(f"{server.url}/metric/visits", data=b"\xff", timeout=5)
        assert refused.status_code == 400 and refused.headers["Content-Type"] == "application/problem+json"


def test_the_body_limit_holds_for_chunked_bodies_too() -> None:
    with serving({"RINGSUM_MAX_BODY": "1KiB"}) as server:

        def chunks(body: bytes, size: int = 100):
            yield from (body[start : start + size] for start in range(0, len(body), size))

        url = f"{server.url}/metric/k"
        assert requests.post(url, data=chunks(b'{"value": 2}'.ljust(1024)), timeout=5).status_code == 200
        too_large = requests.post(url, data=chunks(b'{"value": 2}'.ljust(5000)), timeout=5)
        assert too_large.status_code == 413 and too_large.headers["Content-Type"] == "application/problem+json"
        assert requests.post(url, data=b'{"value": 2}'.ljust(5000), timeout=5).status_code == 413
        assert server.total("k") == 2


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_clean_stop_and_a_restart_restore_the_sums(tmp_path, stop_signal: int) -> None:
    env = {"RINGSUM_DATA_DIR": str(tmp_path / "data")}
    with serving(env) as server:
        for key, value in [("a", 1), ("a", 2), ("b", -5), ("c", 2**53 - 1)]:
            requests.post(f"{server.url}/metric/{key}", json={"value": value}, timeout=5)
        assert server.stop(stop_signal) == 0
    with serving(env) as server:
        assert [server.total(key) for key in "abc"] == [3, -5, 2**53 - 1]
        requests.post(f"{server.url}/metric/a", json={"value": 10}, timeout=5)
        assert server.stop(stop_signal) == 0
    with serving(env) as server:
        assert server.total("a") == 13
    assert not list((tmp_path / "data").glob("*.tmp"))  # no temporary file left behind


def test_values_that_aged_out_while_down_are_dropped(tmp_path) -> None:
    env = {"RINGSUM_DATA_DIR": str(tmp_path / "data"), "RINGSUM_WINDOW": "1s", "RINGSUM_RESOLUTION": "100ms"}
    with serving(env) as server:
        requests.post(f"{server.url}/metric/brief", json={"value": 5}, timeout=5)
        posted = time.monotonic()
        assert server.total("brief") == 5
        assert server.stop() == 0
    time.sleep(max(0.0, posted + 1.3 - time.monotonic()))  # past the window and its last tick
    with serving(env) as server:
        assert server.total("brief") == 0


@pytest.mark.parametrize("server_threads", [None, 4], ids=["one-request-thread", "four-request-threads"])
def test_threads_posting_to_one_key_lose_nothing(server_threads: int | None) -> None:
    threads, posts = 8, 200
    with serving(threads=server_threads) as server:
        errors: list[int] = []

        def post_many() -> None:
            with requests.Session() as session:
                for _ in range(posts):
                    response = session.post(f"{server.url}/metric/shared", json={"value": 1}, timeout=10)
                    if response.status_code != 200:
                        errors.append(response.status_code)

        workers = [threading.Thread(target=post_many) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert errors == []
        assert server.total("shared") == threads * posts


def test_a_port_already_taken_is_one_line_not_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        refused = run_app(["--port", str(taken.getsockname()[1])])
        status = refused.exit_status()
    output = refused.output()
    assert status == 1, output
    assert "cannot listen on 127.0.0.1" in output and "Traceback" not in output and "backtrace" not in output


def test_app_py_exposes_app_for_flask_and_gunicorn(tmp_path) -> None:
    flask = python("-m", "flask", "--app", "app", "routes")
    assert flask.returncode == 0, flask.stderr
    assert "/metric/<key>/sum" in flask.stdout and "/metric/<key>" in flask.stdout


def test_importing_app_py_builds_no_app_until_asked() -> None:
    """A WSGI server or tool that imports ``app`` opens the storage once, when it takes
    ``app.app``; ``import app`` alone (and ``python app.py``, which builds its own in each
    worker) opens none: memory storage would hold the data dir twice."""
    status, loaded = modules_loaded(["-c", "import app"])
    assert status == 0 and "flask" not in loaded and "ringsum.storage.memory" not in loaded
    done = python("-c", "import app, flask; assert isinstance(app.app, flask.Flask) and app.app is app.app")
    assert done.returncode == 0, done.stderr


def python(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``python ARGUMENTS`` in the checkout, as a user would run it there."""
    return subprocess.run(
        [sys.executable, *arguments], cwd=ROOT, env=app_env(), capture_output=True, text=True, timeout=60
    )


def modules_loaded(command: list[str], env: dict[str, str] | None = None) -> tuple[int, set[str]]:
    """The exit status of ``python -X importtime COMMAND`` and every module it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *command], cwd=ROOT, env=app_env(env), capture_output=True, text=True
    )
    lines = (line.split("|") for line in done.stderr.splitlines() if line.startswith("import time:"))
    return done.returncode, {parts[-1].strip() for parts in lines if len(parts) == 3}


def test_a_refused_setting_and_help_answer_before_flask_loads() -> None:
    """So that a typo answers at once, and the cost of Flask is paid only by a server."""
    status, loaded = modules_loaded(["app.py"], {"RINGSUM_WINDOW": "soon"})
    assert status == 2 and "ringsum.config" in loaded
    assert "flask" not in loaded and "ringsum.http.edge" not in loaded
    status, loaded = modules_loaded(["app.py", "--help"])
    assert status == 0 and "flask" not in loaded


def test_the_checkpoints_fold_process_loads_no_web_framework() -> None:
    """The fold runs in a child process every RINGSUM_CHECKPOINT: it pays for the storage
    code it runs, not for Flask (about 0.3 s of CPU a checkpoint)."""
    status, loaded = modules_loaded(["-m", "ringsum.storage.checkpoint", "--help"])
    assert status == 0 and "ringsum.storage.journal" in loaded  # what the fold reads
    assert not {"flask", "werkzeug"} & loaded
