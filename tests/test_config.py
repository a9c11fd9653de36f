"""Settings (docs/api.md#settings): read from the environment or create_app overrides, validated at
start; a bad one stops ``python app.py`` with exit status 2 and one line naming it."""

from __future__ import annotations

import pytest
from serving import Server, run_app

from ringsum import create_app, load_settings
from ringsum.config import DEFAULTS, ConfigError
from ringsum.web import state

SECOND_US = 1_000_000


@pytest.mark.parametrize(
    "written, micros",
    [
        ("500ms", 500_000),
        ("90s", 90 * SECOND_US),
        ("15m", 15 * 60 * SECOND_US),
        ("1h", 3600 * SECOND_US),
        ("2h", 7200 * SECOND_US),
        ("3600", 3600 * SECOND_US),  # a bare number is seconds
        ("1.5", 1_500_000),
        (" 90s ", 90 * SECOND_US),
        (120, 120 * SECOND_US),
    ],
)
def test_durations_are_seconds_or_a_number_with_a_unit(written, micros: int) -> None:
    assert load_settings({"RINGSUM_WINDOW": written, "RINGSUM_RESOLUTION": "0"}, environ={}).window_us == micros


def test_the_defaults() -> None:
    settings = load_settings(environ={})
    assert settings.window_us == 3600 * SECOND_US
    assert settings.resolution_us == SECOND_US
    assert settings.storage_uri == "memory://"
    assert settings.max_keys == 100_000
    assert settings.max_body == 1024 * 1024
    assert settings.api_token is None
    assert settings.data_dir == "data"  # relative: ./data in the working directory
    assert settings.fsync == "everysec" and settings.checkpoint_us == 60 * SECOND_US


def test_an_empty_data_dir_keeps_nothing_and_fsync_takes_any_case() -> None:
    settings = load_settings(
        {"RINGSUM_DATA_DIR": "", "RINGSUM_FSYNC": " Always", "RINGSUM_CHECKPOINT": "5s"}, environ={}
    )
    assert settings.data_dir is None
    assert settings.fsync == "always" and settings.checkpoint_us == 5 * SECOND_US
    assert load_settings({"RINGSUM_FSYNC": "no"}, environ={}).fsync == "no"


def test_zero_resolution_is_exact_mode_and_sizes_take_units() -> None:
    settings = load_settings({"RINGSUM_RESOLUTION": "0", "RINGSUM_MAX_BODY": "64KiB"}, environ={})
    assert settings.resolution_us == 0 and settings.slot_us == 1
    assert settings.max_body == 65536
    assert load_settings({"RINGSUM_MAX_BODY": "2048"}, environ={}).max_body == 2048


def test_overrides_beat_the_environment_which_beats_the_defaults() -> None:
    environ = {"RINGSUM_WINDOW": "15m", "RINGSUM_MAX_KEYS": "7"}
    assert load_settings(environ=environ).window_us == 15 * 60 * SECOND_US
    assert load_settings({"RINGSUM_WINDOW": "90s"}, environ=environ).window_us == 90 * SECOND_US
    assert load_settings({"RINGSUM_WINDOW": "90s"}, environ=environ).max_keys == 7


def test_the_app_reads_settings_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("RINGSUM_MAX_BODY", "100")
    monkeypatch.setenv("RINGSUM_WINDOW", "90s")
    app = create_app({"RINGSUM_STORAGE_URI": "memory://"})
    try:
        assert app.config["RINGSUM_WINDOW"] == "90s"  # each setting is also the Flask config key
        response = app.test_client().post("/metric/k", data=b'{"value": 1}'.ljust(101))
        assert response.status_code == 413
    finally:
        state.close_app(app)


def test_the_flask_config_holds_each_setting_in_use_as_text_that_reads_back_the_same() -> None:
    given = {"RINGSUM_WINDOW": "3600s", "RINGSUM_RESOLUTION": "0", "RINGSUM_MAX_BODY": "64KiB", "RINGSUM_FSYNC": "NO"}
    app = create_app(given)
    try:
        shown = {name: app.config[name] for name in DEFAULTS}
        assert shown["RINGSUM_WINDOW"] == "1h" and shown["RINGSUM_RESOLUTION"] == "0"
        assert shown["RINGSUM_MAX_BODY"] == "65536" and shown["RINGSUM_FSYNC"] == "no"
        assert shown["RINGSUM_DATA_DIR"] == "" and shown["RINGSUM_API_TOKEN"] == ""
        assert all(isinstance(text, str) for text in shown.values())
        assert load_settings(shown, environ={}) == state.settings(app)  # one source of truth
    finally:
        state.close_app(app)


def test_a_refused_storage_uri_never_shows_its_password() -> None:
    for uri in ("memcached://user:hunter2@cache:11211", "redis://:hunter2@localhost:63x9/0", "redis//:hunter2@h:6379"):
        with pytest.raises(ConfigError) as raised:
            load_settings({"RINGSUM_STORAGE_URI": uri}, environ={})
        assert raised.value.name == "RINGSUM_STORAGE_URI" and "hunter2" not in str(raised.value)


BAD_SETTINGS = [
    ("RINGSUM_WINDOW", "0", "positive duration"),
    ("RINGSUM_WINDOW", "garbage", "positive duration"),
    ("RINGSUM_WINDOW", "-5m", "positive duration"),
    ("RINGSUM_WINDOW", "1.5us", "positive duration"),
    ("RINGSUM_RESOLUTION", "7s", "divides RINGSUM_WINDOW"),
    ("RINGSUM_RESOLUTION", "2h", "divides RINGSUM_WINDOW"),
    ("RINGSUM_RESOLUTION", "fast", "exact mode"),
    ("RINGSUM_STORAGE_URI", "memcached://localhost", "memory://"),
    ("RINGSUM_STORAGE_URI", "localhost:6379", "redis://"),
    ("RINGSUM_MAX_KEYS", "0", "at least 1"),
    ("RINGSUM_MAX_KEYS", "lots", "at least 1"),
    ("RINGSUM_MAX_IDEMPOTENCY_KEYS", "0", "at least 1"),
    ("RINGSUM_MAX_BODY", "garbage", "1MiB"),
    ("RINGSUM_MAX_BODY", "10", "at least 64 bytes"),
    ("RINGSUM_DATA_DIR", "/dev/null", "a directory"),
    ("RINGSUM_FSYNC", "sometimes", "always, everysec or no"),
    ("RINGSUM_FSYNC", "", "always, everysec or no"),
    ("RINGSUM_CHECKPOINT", "never", "from 1s to 1d"),
    ("RINGSUM_CHECKPOINT", "10ms", "from 1s to 1d"),
    ("RINGSUM_CHECKPOINT", "2d", "from 1s to 1d"),
]


@pytest.mark.parametrize("name, value, accepts", BAD_SETTINGS)
def test_a_bad_setting_is_a_config_error_naming_it(name: str, value: str, accepts: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({name: value}, environ={})
    assert raised.value.name == name
    assert name in str(raised.value) and accepts in str(raised.value)
    with pytest.raises(ConfigError):
        create_app({name: value})


def finished(server: Server) -> tuple[int, str]:
    """Exit status and output of ``python app.py`` that must refuse to start."""
    return server.exit_status(), server.output()


@pytest.mark.process
def test_python_app_py_exits_2_with_one_line_per_bad_setting() -> None:
    started = [(name, value, run_app(["--port", "1"], {name: value})) for name, value, _ in BAD_SETTINGS]
    workers = run_app(["--port", "1", "--workers", "2"], {"RINGSUM_STORAGE_URI": "memory://"})
    bad_port = run_app(["--port", "70000"])
    bad_threads = run_app(["--port", "1", "--threads", "0"])
    for name, value, process in started:
        status, output = finished(process)
        assert status == 2, (name, value, output)
        assert len(output.strip().splitlines()) == 1, output
        assert name in output and "Traceback" not in output
    status, output = finished(workers)
    assert status == 2 and len(output.strip().splitlines()) == 1, output
    assert "--workers" in output and "RINGSUM_STORAGE_URI=redis://" in output
    status, output = finished(bad_port)
    assert status == 2 and "--port" in output and "Traceback" not in output
    status, output = finished(bad_threads)
    assert status == 2 and "--threads" in output and "Traceback" not in output


def test_a_setting_an_earlier_release_read_is_refused_not_ignored() -> None:
    with pytest.raises(ConfigError, match=r"RINGSUM_SNAPSHOT_PATH.*RINGSUM_DATA_DIR"):
        load_settings(environ={"RINGSUM_SNAPSHOT_PATH": "/var/lib/ringsum/snap.json"})
