"""``process_*`` on /metrics (ringsum.web.process_metrics): prometheus_client's six families,
of the one process for an app served alone, and of the whole server (supervisor and
workers) under ``python app.py``: summed, the CPU never going back when a worker is
replaced, the start time the supervisor's; and still there where /proc shows processes
only (systemd's ``ProcSubset=pid``, which deploy/ringsum.service sets)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from prometheus_client import ProcessCollector as PrometheusProcessCollector
from serving import APP, Server, app_env, free_port, launch, serving, wait_until_answering
from test_metrics_workers import post_concurrently, scrape
from test_observability import scrape as scrape_app
from test_server import wait_for, workers_of

from ringsum.web.process_metrics import ProcessCollector, Roster, _boot_time

FAMILIES = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
}
TICKS = os.sysconf("SC_CLK_TCK")


def process_figures(samples: dict[str, dict[tuple, float]]) -> dict[str, float]:
    return {name: samples[name][()] for name in FAMILIES if name in samples}


def cpu_seconds(pid: int, *, children: bool = True) -> float:
    fields = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()
    return sum(int(fields[index]) for index in ((11, 12, 13, 14) if children else (11, 12))) / TICKS


def resident_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[21]) * os.sysconf("SC_PAGE_SIZE")


def their_figures(pid: int | str = "self") -> dict[str, float]:
    """What prometheus_client's own collector says of one process."""
    collector = PrometheusProcessCollector(pid=lambda: pid, registry=None)
    return {metric.samples[0].name: metric.samples[0].value for metric in collector.collect()}


# -- in process ------------------------------------------------------------------------


def test_an_app_served_alone_reports_its_process_as_prometheus_client_does(make_memory_app) -> None:
    client = make_memory_app().test_client()
    theirs = their_figures()
    ours = process_figures(scrape_app(client))
    assert set(ours) == set(theirs) == FAMILIES
    assert ours["process_start_time_seconds"] == pytest.approx(theirs["process_start_time_seconds"], abs=0.02)
    assert ours["process_max_fds"] == theirs["process_max_fds"]
    assert ours["process_cpu_seconds_total"] >= theirs["process_cpu_seconds_total"]  # read later, children too
    assert ours["process_resident_memory_bytes"] == pytest.approx(theirs["process_resident_memory_bytes"], rel=0.2)
    assert abs(ours["process_open_fds"] - theirs["process_open_fds"]) <= 5


def test_one_worker_of_a_multiprocess_server_ringsum_does_not_run_shows_none(
    make_memory_app, tmp_path, monkeypatch
) -> None:
    """gunicorn -w N with PROMETHEUS_MULTIPROC_DIR: one worker's figures would pass for the whole."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert process_figures(scrape_app(make_memory_app().test_client())) == {}


def test_every_family_is_read_from_proc_pid_alone(tmp_path: Path) -> None:
    """A /proc with nothing but this process's directory (ProcSubset=pid hides /proc/stat)."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "self").symlink_to(f"/proc/{os.getpid()}")
    collector = ProcessCollector(shared=False, proc=str(proc), boot_time=_boot_time(str(proc)))
    ours = {metric.samples[0].name: metric.samples[0].value for metric in collector.collect()}
    assert set(ours) == FAMILIES
    theirs = their_figures()
    assert ours["process_start_time_seconds"] == pytest.approx(theirs["process_start_time_seconds"], abs=1.0)


def test_the_boot_time_comes_from_the_clock_where_proc_stat_is_hidden(tmp_path: Path) -> None:
    assert _boot_time(str(tmp_path)) == pytest.approx(_boot_time("/proc"), abs=1.0)


def test_the_roster_clears_a_slot_only_for_the_worker_it_names() -> None:
    roster = Roster(3)
    roster.started(0, 100)
    roster.started(2, 300)
    roster.ended(2, 299)  # an older worker of that slot
    assert roster.pids() == [100, 300]
    roster.ended(2, 300)
    assert roster.pids() == [100]


# -- real servers ----------------------------------------------------------------------


@pytest.mark.process
def test_workers_3_report_the_whole_server_and_the_cpu_never_goes_back(redis_server) -> None:
    redis_server.flushall()
    with serving({"RINGSUM_STORAGE_URI": redis_server.url, "RINGSUM_REDIS_TIMEOUT": "5s"}, workers=3) as server:
        wait_for(lambda: len(workers_of(server)) == 3, what="3 workers")
        supervisor = server.process.pid
        post_concurrently(server, 60)
        workers = workers_of(server)
        figures = process_figures(scrape(server))
        everyone = [supervisor, *workers]
        assert set(figures) == FAMILIES
        assert figures["process_max_fds"] == 4 * their_figures(supervisor)["process_max_fds"]
        # The server's start, not the answering worker's (started later).
        assert figures["process_start_time_seconds"] == pytest.approx(
            their_figures(supervisor)["process_start_time_seconds"], abs=0.02
        )
        assert figures["process_resident_memory_bytes"] == pytest.approx(
            sum(resident_bytes(pid) for pid in everyone), rel=0.1
        )
        assert figures["process_open_fds"] >= 4 * 3  # stdin, stdout, stderr at least, each
        assert figures["process_cpu_seconds_total"] >= sum(cpu_seconds(pid) for pid in everyone) - 0.05

        killed = workers[0]
        killed_cpu = cpu_seconds(killed)
        assert killed_cpu > 0.05  # it started, and served: enough for its loss to show
        before = process_figures(scrape(server))["process_cpu_seconds_total"]
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: killed not in workers_of(server) and len(workers_of(server)) == 3, what="a replacement")
        [replacement] = set(workers_of(server)) - set(workers)
        wait_for(lambda: scrape(server)["ringsum_workers"][()] == 3, what="the replacement serving")
        after = process_figures(scrape(server))["process_cpu_seconds_total"]
        # The dead worker's time stays in (the supervisor's cutime), the new one's is added.
        assert after >= before + cpu_seconds(replacement, children=False) - 0.02, (before, after, killed_cpu)


def _proc_subset_pid_works() -> bool:
    probe = ["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -t proc -o subset=pid proc /proc"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.process
@pytest.mark.skipif(not _proc_subset_pid_works(), reason="needs unshare and mount (root) for a /proc of pids only")
def test_under_proc_subset_pid_every_family_is_there_and_a_reload_keeps_them_going() -> None:
    """As under deploy/ringsum.service: a /proc showing processes only (no /proc/stat)."""
    port = free_port()
    shell = (
        "mount -t proc -o subset=pid,hidepid=invisible proc /proc && test ! -e /proc/stat && "
        f'exec "{sys.executable}" "{APP}" --host 127.0.0.1 --port {port}'
    )
    server: Server = launch(["unshare", "-m", "--propagation", "private", "sh", "-c", shell], app_env(), port)
    try:
        wait_until_answering(server)
        requests.post(f"{server.url}/metric/a", json={"value": 1}, timeout=10)
        first = process_figures(scrape(server))
        assert set(first) == FAMILIES, server.output()
        supervisor = server.process.pid  # sh exec'd python: the same process
        assert first["process_start_time_seconds"] == pytest.approx(
            their_figures(supervisor)["process_start_time_seconds"], abs=1.0
        )
        [worker] = workers_of(server)
        os.kill(supervisor, signal.SIGHUP)
        wait_for(lambda: workers_of(server) not in ([], [worker]), what="the reload's new worker")
        wait_until_answering(server)
        second = process_figures(scrape(server))
        assert second["process_start_time_seconds"] == first["process_start_time_seconds"]
        assert second["process_cpu_seconds_total"] >= first["process_cpu_seconds_total"]
        assert server.stop() == 0
    finally:
        if server.process.poll() is None:
            server.kill()
