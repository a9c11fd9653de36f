"""/metrics under ``python app.py --workers 3`` (docs/api.md#metrics: whole
whichever worker answers): counters and histograms summed over the workers, scrape after scrape, a
replaced worker's counts kept, the run's directory removed at exit. Real processes on a
real Redis."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families
from raw_http import exchange
from serving import Server, serving
from test_observability import requests_counted
from test_server import wait_for, workers_of

from ringsum.http.wire import REFUSAL_REASONS

pytestmark = pytest.mark.process

POST = ("/metric/<key>", "POST", 200)
LATENCY_LABELS = (("method", "POST"), ("route", "/metric/<key>"))


def scrape(server: Server) -> dict[str, dict[tuple, float]]:
    """A scrape on a connection of its own, so any worker may answer it."""
    response = requests.get(f"{server.url}/metrics", headers={"Connection": "close"}, timeout=10)
    assert response.status_code == 200
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def post_concurrently(server: Server, count: int) -> None:
    """``count`` posts of 1 to ``hits``, each on its own connection, several at a time:
    the kernel hands the connections to whichever worker accepts first."""

    def post(_: int) -> None:
        response = requests.post(
            f"{server.url}/metric/hits", json={"value": 1}, headers={"Connection": "close"}, timeout=10
        )
        assert response.status_code == 200

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(post, range(count)))


def shared_files(worker: int) -> set[Path]:
    """The metrics files a worker has mapped (/proc/PID/environ shows only what it was
    started with, not what the supervisor set before forking it)."""
    maps = Path(f"/proc/{worker}/maps").read_text().splitlines()
    return {Path(line.split()[-1]) for line in maps if line.endswith(".db") and "ringsum-metrics-" in line}


def posts_per_file(directory: Path) -> dict[str, float]:
    """The POST count each counter file of the directory holds (one per worker, and the archive)."""
    found = {}
    for path in directory.glob("counter_*.db"):
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            if '"/metric/<key>"' in key and '"POST"' in key and '"200"' in key:
                found[path.name] = value
    return found


def test_workers_3_counters_are_summed_over_workers_and_never_go_back(redis_server) -> None:
    redis_server.flushall()
    env = {"RINGSUM_STORAGE_URI": redis_server.url, "RINGSUM_EXPORT": "hits", "RINGSUM_REDIS_TIMEOUT": "5s"}
    with serving(env, workers=3) as server:
        wait_for(lambda: len(workers_of(server)) == 3, what="3 workers")
        requests.get(f"{server.url}/metric/hits/sum", timeout=10)  # a worker writes its files once it counts
        [directory] = {path.parent for worker in workers_of(server) for path in shared_files(worker)}
        sent = scrapes = refused = 0
        seen: list[float] = []

        def counted_scrape() -> dict[str, dict[tuple, float]]:
            nonlocal scrapes
            scrapes += 1
            return scrape(server)

        def check() -> None:
            samples = counted_scrape()
            posted = requests_counted(samples, *POST)
            seen.append(posted)
            assert posted == sent, seen  # every answered request, whichever worker answered it
            assert samples["ringsum_http_request_duration_seconds_count"][LATENCY_LABELS] == sent
            assert samples["ringsum_values_recorded_total"][()] == sent
            assert samples["ringsum_window_sum"][(("key", "hits"),)] == sent
            # Each scrape counts the ones before it (it is counted once answered).
            assert requests_counted(samples, "/metrics", "GET", 200) == scrapes - 1
            assert set(samples["ringsum_storage_errors_total"].values()) == {0}
            assert samples["ringsum_workers"][()] == 3
            # The edge's refusals, counted by whichever worker refused, every reason there.
            refusals = {
                dict(labels)["reason"]: value for labels, value in samples["ringsum_edge_refusals_total"].items()
            }
            assert refusals == {**dict.fromkeys(REFUSAL_REASONS, 0), "malformed": refused}

        for _ in range(8):
            post_concurrently(server, 15)
            sent += 15
            exchange(server, b"NOT HTTP\r\n\r\n")
            refused += 1
            for _ in range(3):
                check()
        assert sum(1 for posts in posts_per_file(directory).values() if posts) >= 2  # the sum is over workers

        killed = workers_of(server)[0]
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: killed not in workers_of(server) and len(workers_of(server)) == 3, what="a replacement")
        wait_for(lambda: counted_scrape()["ringsum_workers"][()] == 3, what="the replacement serving")
        wait_for(lambda: not Path(directory, f"counter_{killed}.db").exists(), what="the dead worker's file folded")
        assert Path(directory, "counter_archive.db").exists()
        for _ in range(3):
            check()  # the dead worker's counts are still in the sum
        post_concurrently(server, 15)
        sent += 15
        check()
        assert seen == sorted(seen)

        assert server.stop() == 0
    assert not directory.exists()  # the supervisor removes the run's directory


def test_one_worker_keeps_its_metrics_in_process(redis_server) -> None:
    """No shared directory, even when one is inherited: another run's files are never read."""
    redis_server.flushall()
    env = {"RINGSUM_STORAGE_URI": redis_server.url, "PROMETHEUS_MULTIPROC_DIR": "/nonexistent/elsewhere"}
    with serving(env) as server:
        requests.post(f"{server.url}/metric/hits", json={"value": 1}, timeout=10)
        assert requests_counted(scrape(server), *POST) == 1
        [worker] = workers_of(server)
        assert not shared_files(worker)
