"""The dashboard at ``GET /``: served open, and driven in a real browser.

The browser tests run Debian's Chromium (``/usr/bin/chromium``) through Playwright
against a real HTTP server on 127.0.0.1. They are memory-only (one points at a Redis
nobody listens on, to see a 503): the page only reads the JSON API, which the API tests
cover on every backend, and memory storage takes a controllable clock, so sparklines
can span the whole window without waiting for it.
Without Chromium they skip, unless RINGSUM_REQUIRE_BROWSER=1 (CI), where they fail.
``RINGSUM_UPDATE_SCREENSHOT=1`` also rewrites docs/dashboard.png for the README.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from ringsum import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
README_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "dashboard.png"
START_US = 1_767_268_800_000_000  # 2026-01-01T12:00:00Z: any fixed instant will do
MINUTE_US = 60_000_000
UPDATE = 10_000  # ms a browser assertion may wait for the page's next refresh


# -- the page itself, through the test client (every backend) ---------------------


def _data(html: str, name: str) -> str:
    match = re.search(rf'data-{name}="([^"]*)"', html)
    assert match, f"data-{name} missing from the page"
    return match[1]


def test_page_and_its_assets_are_served_without_a_token(make_app) -> None:
    client = make_app(RINGSUM_API_TOKEN="s3cret").test_client()
    page = client.get("/")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert _data(html, "token-required") == "true"
    assets = re.findall(r'(?:src|href)="(/[^"]+\.(?:js|css))"', html)
    assert sorted(Path(asset).name for asset in assets) == ["dashboard.css", "dashboard.js"]
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert response.mimetype in {"text/css", "text/javascript", "application/javascript"}
    # Nothing on the page may come from anywhere but this origin: it works offline.
    assert "http://" not in html and "https://" not in html
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert client.get("/metric/anything/sum").status_code == 401


def test_page_without_a_token_setting_does_not_ask_for_one(client) -> None:
    assert _data(client.get("/").get_data(as_text=True), "token-required") == "false"


@pytest.mark.parametrize(
    ("query", "refresh_ms"),
    [
        ("", "5000"),
        ("?refresh=500", "500"),
        ("?refresh=1", "250"),
        ("?refresh=9999999", "60000"),
        ("?refresh=x", "5000"),
    ],
)
def test_refresh_interval_is_taken_from_the_query_within_bounds(client, query: str, refresh_ms: str) -> None:
    response = client.get(f"/{query}")
    assert response.status_code == 200
    assert _data(response.get_data(as_text=True), "refresh-ms") == refresh_ms


@pytest.mark.parametrize(
    ("window", "resolution", "step", "points"),
    [
        ("1h", "1s", "1m", 61),
        ("1h", "0", "1m", 61),
        ("90s", "1s", "2s", 46),
        ("100s", "1s", "2s", 51),
        ("7h", "1s", "7m", 61),
        ("2s", "1s", "1s", 3),
        ("10m", "1m", "1m", 11),
    ],
)
def test_sparkline_step_is_whole_ticks_giving_about_60_points(
    make_app, window: str, resolution: str, step: str, points: int
) -> None:
    client = make_app(RINGSUM_WINDOW=window, RINGSUM_RESOLUTION=resolution).test_client()
    page_step = _data(client.get("/").get_data(as_text=True), "step")
    assert page_step == step
    client.post("/metric/k", json={"value": 1})
    series = client.get(f"/metric/k/series?step={page_step}")
    assert series.status_code == 200, series.get_data(as_text=True)
    assert len(series.get_json()["points"]) == points


# -- a real server and a real browser (memory storage) ------------------------------


class _OneRequestPerConnection(WSGIRequestHandler):
    # HTTP/1.0 closes each connection after its answer, so once the server is stopped
    # the browser truly cannot reach it (no kept-alive connection still answering).
    protocol_version = "HTTP/1.0"

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@dataclass
class FakeClock:
    """Epoch µs that move only when a test says so."""

    now_us: int = START_US

    def __call__(self) -> int:
        return self.now_us

    def advance(self, micros: int) -> None:
        self.now_us += micros


@dataclass
class Server:
    url: str
    clock: FakeClock
    token: str | None
    _server: BaseWSGIServer
    _thread: threading.Thread
    stopped: bool = field(default=False)

    def post(self, key: str, value: float) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = requests.post(f"{self.url}/metric/{key}", json={"value": value}, headers=headers, timeout=5)
        assert response.status_code == 200, response.text

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """Start ringsum (memory storage, fake clock) on a free 127.0.0.1 port."""
    started: list[tuple[Server, Any]] = []

    def start(port: int = 0, **overrides: Any) -> Server:
        clock = FakeClock()
        app = create_app({"RINGSUM_STORAGE_URI": "memory://", **overrides}, clock=clock)
        server = make_server("127.0.0.1", port, app, threaded=True, request_handler=_OneRequestPerConnection)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        thread.start()
        running = Server(
            f"http://127.0.0.1:{server.server_port}", clock, overrides.get("RINGSUM_API_TOKEN"), server, thread
        )
        started.append((running, app))
        return running

    yield start
    for running, app in started:
        running.stop()
        app.extensions["ringsum.storage"].close()


def _missing_browser() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found: install Debian's chromium package (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: pip install -r requirements-dev.txt"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _missing_browser()
    if missing:
        if os.environ.get("RINGSUM_REQUIRE_BROWSER") == "1":
            pytest.fail(f"RINGSUM_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """Open a URL in a fresh browser context (own sessionStorage) at a given width."""
    contexts: list[Any] = []

    def open_at(url: str, width: int = 1280, height: int = 800) -> Any:
        context = browser.new_context(viewport={"width": width, "height": height}, locale="en-US")
        contexts.append(context)
        page = context.new_page()
        page.goto(url)
        return page

    yield open_at
    for context in contexts:
        context.close()


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _rows(page: Any) -> Any:
    return page.locator("#metrics li.metric")


def _row(page: Any, key: str) -> Any:
    return page.locator(f'#metrics li.metric[data-key="{key}"]')


def _expect_rows(page: Any, keys: list[str], values: list[str]) -> None:
    expect = _expect()
    expect(_rows(page).locator(".key")).to_have_text(keys, timeout=UPDATE)
    expect(_rows(page).locator(".value")).to_have_text(values, timeout=UPDATE)


def test_lists_live_keys_with_sums_and_sparklines_and_follows_new_values(serve, open_page, tmp_path: Path) -> None:
    expect = _expect()
    server = serve()
    server.post("zeta", 2)
    server.post("alpha", 5)
    page = open_page(f"{server.url}/?refresh=300")

    _expect_rows(page, ["alpha", "zeta"], ["5", "2"])
    line = _row(page, "alpha").locator("path.spark-line")
    expect(line).to_have_attribute("d", re.compile(r"^M\d"))
    before = line.get_attribute("d")
    expect(page.locator("#empty")).to_be_hidden()

    server.clock.advance(MINUTE_US)  # a later step of the sparkline
    server.post("alpha", 3)
    server.post("mid", 1.5)
    _expect_rows(page, ["alpha", "mid", "zeta"], ["8", "2", "2"])
    expect(line).not_to_have_attribute("d", before)
    expect(_row(page, "mid").locator("path.spark-line")).to_have_attribute("d", re.compile(r"^M\d"))

    server.clock.advance(61 * MINUTE_US)  # everything ages out of the hour
    expect(_rows(page)).to_have_count(0, timeout=UPDATE)
    expect(page.locator("#empty")).to_be_visible()

    server.clock.advance(MINUTE_US)
    for key, value in [("checkout.orders", 12), ("signup.visits", 40)]:
        server.post(key, value)
    _expect_rows(page, ["checkout.orders", "signup.visits"], ["12", "40"])
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 1000


def test_prefix_filter_hides_other_keys(serve, open_page) -> None:
    expect = _expect()
    server = serve()
    for key in ["checkout.orders", "checkout.visits", "signup.visits"]:
        server.post(key, 1)
    page = open_page(f"{server.url}/?refresh=300")
    expect(_rows(page)).to_have_count(3, timeout=UPDATE)

    page.fill("#filter", "checkout.")
    expect(_rows(page).locator(".key")).to_have_text(["checkout.orders", "checkout.visits"], timeout=UPDATE)
    assert "prefix=checkout." in page.url  # a reload keeps the filter

    page.fill("#filter", "nothing.")
    expect(_rows(page)).to_have_count(0, timeout=UPDATE)
    expect(page.locator("#empty-text")).to_have_text("No live key starts with “nothing.”.")

    page.fill("#filter", "no spaces")
    expect(page.locator("#banner")).to_contain_text("(400)", timeout=UPDATE)
    expect(_rows(page)).to_have_count(0)

    page.fill("#filter", "")
    expect(_rows(page)).to_have_count(3, timeout=UPDATE)
    expect(page.locator("#banner")).to_be_hidden()


def test_shows_the_first_100_keys_and_says_there_are_more(serve, open_page) -> None:
    expect = _expect()
    server = serve()
    for number in range(101):
        server.post(f"key.{number:03d}", number)
    page = open_page(f"{server.url}/?refresh=60000")
    expect(_rows(page)).to_have_count(100, timeout=UPDATE)
    expect(_rows(page).last).to_have_attribute("data-key", "key.099")
    expect(page.locator("#truncated")).to_contain_text("first 100 keys")

    page.fill("#filter", "key.1")
    expect(_rows(page)).to_have_count(1, timeout=UPDATE)
    expect(page.locator("#truncated")).to_be_hidden()


def test_empty_state_shows_a_curl_command_that_works_as_typed(serve, open_page) -> None:
    expect = _expect()
    server = serve()
    page = open_page(f"{server.url}/?refresh=300")
    expect(page.locator("#empty")).to_be_visible(timeout=UPDATE)
    expect(page.locator("#empty-text")).to_have_text("No live keys yet. Record a first value:")
    command = page.locator("#empty-curl").inner_text()

    argv = shlex.split(command)
    assert argv[:3] == ["curl", "-X", "POST"]
    url, body = argv[3], argv[argv.index("-d") + 1]
    assert url == f"{server.url}/metric/visits"  # the host the page was opened on
    assert requests.post(url, data=body, timeout=5).status_code == 200

    _expect_rows(page, ["visits"], ["3"])
    expect(page.locator("#empty")).to_be_hidden()


def test_says_so_when_the_service_cannot_be_reached(serve, open_page) -> None:
    expect = _expect()
    server = serve()
    server.post("visits", 4)
    page = open_page(f"{server.url}/?refresh=300")
    _expect_rows(page, ["visits"], ["4"])
    expect(page.locator("#banner")).to_be_hidden()

    server.stop()
    banner = page.locator("#banner")
    expect(banner).to_be_visible(timeout=UPDATE)
    expect(banner).to_contain_text(f"Cannot reach the ringsum service at {server.url}")
    # The last figures stay on screen, marked as stale.
    _expect_rows(page, ["visits"], ["4"])
    expect(page.locator("#metrics")).to_have_class(re.compile(r"\bstale\b"))

    # Back on the same address (empty: memory storage without a snapshot): it recovers.
    restarted = serve(port=int(server.url.rsplit(":", 1)[1]))
    restarted.post("visits", 1)
    _expect_rows(page, ["visits"], ["1"])
    expect(banner).to_be_hidden()
    expect(page.locator("#metrics")).not_to_have_class(re.compile(r"\bstale\b"))


def test_says_so_when_the_service_answers_503(serve, open_page) -> None:
    expect = _expect()
    with socket.socket() as probe:  # a port nothing listens on: the storage is down
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    server = serve(RINGSUM_STORAGE_URI=f"redis://127.0.0.1:{closed_port}/0")
    page = open_page(f"{server.url}/?refresh=300")
    banner = page.locator("#banner")
    expect(banner).to_contain_text("The ringsum service answered 503: storage is unreachable", timeout=UPDATE)
    expect(page.locator("#empty")).to_be_hidden()  # no data is not the same as no keys


def test_asks_for_the_token_once_and_again_when_it_is_refused(serve, open_page) -> None:
    expect = _expect()
    server = serve(RINGSUM_API_TOKEN="s3cret-token")
    server.post("visits", 7)
    page = open_page(f"{server.url}/?refresh=300")

    form = page.locator("#token-form")
    expect(form).to_be_visible(timeout=UPDATE)
    expect(page.locator("#token-error")).to_be_hidden()
    expect(_rows(page)).to_have_count(0)

    page.fill("#token-input", "wrong-token")
    page.click("#token-form button[type=submit]")
    expect(page.locator("#token-error")).to_contain_text("refused", timeout=UPDATE)
    expect(form).to_be_visible()
    expect(_rows(page)).to_have_count(0)
    assert page.evaluate("sessionStorage.getItem('ringsum.token')") is None

    page.fill("#token-input", "s3cret-token")
    page.click("#token-form button[type=submit]")
    _expect_rows(page, ["visits"], ["7"])
    expect(form).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('ringsum.token')") == "s3cret-token"

    page.reload()  # asked once: the tab remembers it
    _expect_rows(page, ["visits"], ["7"])
    expect(form).to_be_hidden()


@pytest.mark.parametrize(("width", "height"), [(375, 740), (1280, 800)])
def test_fits_phone_and_desktop_widths(serve, open_page, width: int, height: int) -> None:
    expect = _expect()
    server = serve()
    long_key = "a.very.long.key." + "x" * 184
    largest = 2**53 - 1
    for key, value in [(long_key, 123456789), ("checkout.orders", 12), ("signup.visits", largest)]:
        server.post(key, value)
    server.post("signup.visits", largest)  # a sum past 2**53, where JavaScript numbers round
    page = open_page(f"{server.url}/?refresh=300", width=width, height=height)
    expect(_rows(page)).to_have_count(3, timeout=UPDATE)
    expect(_row(page, "signup.visits").locator(".value")).to_have_text(f"{2 * largest:,}")
    expect(_row(page, long_key).locator(".value")).to_have_text("123,456,789")

    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at {width}px wide"
    for index in range(3):
        row = _rows(page).nth(index)
        for part in (row, row.locator(".key"), row.locator(".value"), row.locator("svg.spark")):
            box = part.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, part
        assert row.locator("svg.spark").bounding_box()["width"] >= width / 4  # a sparkline, not a speck


def test_screenshot_for_the_readme(serve, open_page, tmp_path: Path) -> None:
    """A populated page with an hour of made-up traffic; also rewrites docs/dashboard.png
    when RINGSUM_UPDATE_SCREENSHOT=1."""
    expect = _expect()
    server = serve()
    shapes: dict[str, Callable[[int], float]] = {
        "api.requests": lambda m: 900 + 400 * math.sin(m / 9) + 5 * m,
        "checkout.orders": lambda m: 20 + 15 * math.sin(m / 5) ** 2,
        "errors.5xx": lambda m: 30 if 38 <= m <= 42 else (1 if m % 7 == 0 else 0),
        "signup.visits": lambda m: 60 + 2.5 * m,
    }
    for minute in range(61):  # one value per sparkline step, the partly-gone oldest one too
        if minute:
            server.clock.advance(MINUTE_US)
        for key, shape in shapes.items():
            value = round(shape(minute))
            if value:
                server.post(key, value)
    page = open_page(f"{server.url}/?refresh=300", width=1280, height=430)
    expect(_rows(page).locator(".key")).to_have_text(sorted(shapes), timeout=UPDATE)
    expect(page.locator("#updated")).to_contain_text("Updated")

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert 1000 < shot.stat().st_size < 200_000
    if os.environ.get("RINGSUM_UPDATE_SCREENSHOT") == "1":
        README_SCREENSHOT.parent.mkdir(exist_ok=True)
        README_SCREENSHOT.write_bytes(shot.read_bytes())
