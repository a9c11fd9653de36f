"""The dashboard at ``GET /``: served open, and driven in a real browser.

The browser tests run Debian's Chromium (``/usr/bin/chromium``) through Playwright
against a real HTTP server on 127.0.0.1, at a phone and a desktop width. They are
memory-only (one points at a Redis nobody listens on, to see a 503): the page only reads
the JSON API, which the API tests cover on every backend, and memory storage takes a
controllable clock, so sparklines can span the whole window without waiting for it.
Paging is also driven against a list answer with a ``next`` cursor served through
Playwright's request interception, as the paging API (docs/api.md#listing-keys) answers.
Without Chromium they skip, unless RINGSUM_REQUIRE_BROWSER=1 (CI), where they fail.
``RINGSUM_UPDATE_SCREENSHOT=1`` also rewrites the screenshots in docs/ for the README.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import os
import re
import shlex
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
import requests
from helpers import ManualClock
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from ringsum import create_app
from ringsum.web.state import close_app

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
DOCS = Path(__file__).resolve().parent.parent / "docs"
START_US = 1_767_268_800_000_000  # 2026-01-01T12:00:00Z: any fixed instant will do
MINUTE_US = 60_000_000
UPDATE = 10_000  # ms a browser assertion may wait for the page's next refresh
PHONE, DESKTOP = (375, 740), (1280, 800)
WIDTHS = pytest.mark.parametrize(("width", "height"), [PHONE, DESKTOP], ids=["phone", "desktop"])


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


# Which step, RINGSUM_WINDOW, RINGSUM_RESOLUTION -> the step the page uses, and the points
# of that series. Sparklines ("step"): about 60 points. A key's chart ("chart-step"): 60
# to 120 steps, a round duration where one fits.
PAGE_STEPS = """
    step        1h   1s   1m   61
    step        1h   0    1m   61
    step        90s  1s   2s   46
    step        100s 1s   2s   51
    step        7h   1s   7m   61
    step        2s   1s   1s   3
    step        10m  1m   1m   11
    chart-step  1h   1s   30s  121
    chart-step  1h   0    30s  121
    chart-step  1h   9s   36s  101   (no round step is whole ticks of 9s)
    chart-step  90s  1s   1s   91
    chart-step  7h   1s   5m   85
    chart-step  1d   1s   15m  97
    chart-step  30d  1m   6h   121
    chart-step  2s   1s   1s   3
    chart-step  10m  1m   1m   11
"""


@pytest.mark.parametrize(
    ("attribute", "window", "resolution", "step", "points"),
    [(*line.split()[:4], int(line.split()[4])) for line in PAGE_STEPS.strip().splitlines()],
)
def test_the_page_steps_are_whole_ticks_the_series_endpoint_takes(
    make_app, attribute: str, window: str, resolution: str, step: str, points: int
) -> None:
    assert_page_step(make_app, attribute, window, resolution, step, points)


def assert_page_step(make_app, attribute: str, window: str, resolution: str, step: str, points: int) -> None:
    """The page's ``data-<attribute>`` step is ``step``, and the series endpoint takes it,
    answering ``points`` points."""
    client = make_app(RINGSUM_WINDOW=window, RINGSUM_RESOLUTION=resolution).test_client()
    page_step = _data(client.get("/").get_data(as_text=True), attribute)
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
class Server:
    url: str
    clock: ManualClock
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
        clock = ManualClock(START_US)
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
        close_app(app)


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

    def open_at(
        url: str, width: int = 1280, height: int = 800, timezone: str = "UTC", route: Any = None, now: Any = None
    ) -> Any:
        context = browser.new_context(viewport={"width": width, "height": height}, locale="en-US", timezone_id=timezone)
        contexts.append(context)
        page = context.new_page()
        if now is not None:  # the browser's Date agrees with the server's fake clock
            page.clock.set_fixed_time(now.now_us / 1e6)
        if route is not None:
            page.route(re.compile(r"/metric\?"), route)
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


def _showing(serve: Any, open_page: Any, key: str, value: int) -> tuple[Any, Any]:
    """A server holding ``value`` for ``key``, and a page (refreshing every 300 ms) showing it."""
    server = serve()
    server.post(key, value)
    page = open_page(f"{server.url}/?refresh=300")
    _expect_rows(page, [key], [str(value)])
    return server, page


def _expect_rows(page: Any, keys: list[str], values: list[str]) -> None:
    expect = _expect()
    expect(_rows(page).locator(".key")).to_have_text(keys, timeout=UPDATE)
    expect(_rows(page).locator(".value")).to_have_text(values, timeout=UPDATE)


# Each visible number's text, with the number of lines it is laid out on and how far it
# reaches right (a Range gives one rectangle per line box the text occupies).
_NUMBER_LINES = """
() => [...document.querySelectorAll(".num, .value")]
  .filter((element) => element.getClientRects().length && element.textContent.trim())
  .map((element) => {
    const range = document.createRange();
    range.selectNodeContents(element);
    const boxes = [...range.getClientRects()].filter((box) => box.width > 0);
    return {
      text: element.textContent,
      lines: new Set(boxes.map((box) => Math.round(box.bottom))).size,
      right: Math.max(...boxes.map((box) => box.right)),
    };
  })
"""


def _assert_numbers_on_one_line(page: Any, width: int, expected: list[str]) -> None:
    numbers = page.evaluate(_NUMBER_LINES)
    shown = {number["text"] for number in numbers}
    assert set(expected) <= shown, f"{set(expected) - shown} not shown as numbers"
    for number in numbers:
        assert number["lines"] == 1, f"{number['text']!r} is broken over {number['lines']} lines at {width}px"
        assert number["right"] <= width, f"{number['text']!r} runs off the {width}px screen"


# Share of pixels in each box of a PNG that differ from the box's most common colour:
# 0 for a blank region, a few percent for a thin line, more for filled bars or text.
_INK = """
async ([png, boxes]) => {
  const image = new Image();
  image.src = `data:image/png;base64,${png}`;
  await image.decode();
  const canvas = document.createElement("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  return boxes.map(({ x, y, width, height }) => {
    const { data } = context.getImageData(Math.round(x), Math.round(y), Math.round(width), Math.round(height));
    const counts = new Map();
    for (let i = 0; i < data.length; i += 4) {
      const colour = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];
      counts.set(colour, (counts.get(colour) || 0) + 1);
    }
    const background = [...counts.entries()].sort((a, b) => b[1] - a[1])[0][0];
    const [r, g, b] = [background >> 16, (background >> 8) & 255, background & 255];
    let ink = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) > 60) ink++;
    }
    return ink / (data.length / 4);
  });
}
"""


def _ink(browser: Any, png: bytes, boxes: list[dict[str, float]]) -> list[float]:
    """Measure a screenshot in a blank page of the same browser (no image library)."""
    context = browser.new_context()
    try:
        page = context.new_page()
        return page.evaluate(_INK, [base64.b64encode(png).decode(), boxes])
    finally:
        context.close()


def _box(locator: Any) -> dict[str, float]:
    box = locator.bounding_box()
    assert box is not None, locator
    return box


def _post_hour_of_traffic(server: Server) -> dict[str, list[int]]:
    """Four keys with an hour of made-up traffic, a value every 30 s (a chart step);
    answers the values posted per key, oldest first."""
    shapes: dict[str, Callable[[float], float]] = {
        "api.requests": lambda m: 900 + 400 * math.sin(m / 9) + 5 * m,
        "checkout.orders": lambda m: 20 + 15 * math.sin(m / 5) ** 2,
        "errors.5xx": lambda m: 30 if 38 <= m <= 42 else (1 if m % 7 == 0 else 0),
        "signup.visits": lambda m: 60 + 2.5 * m,
    }
    posted: dict[str, list[int]] = {key: [] for key in shapes}
    for half_minute in range(121):  # every step of the window, the partly-gone oldest one too
        if half_minute:
            server.clock.advance(MINUTE_US // 2)
        for key, shape in shapes.items():
            value = round(shape(half_minute / 2) / 2)
            posted[key].append(value)
            if value:
                server.post(key, value)
    return posted


def test_lists_live_keys_with_sums_and_sparklines_and_follows_new_values(serve, open_page) -> None:
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


def test_prefix_filter_hides_other_keys(serve, open_page) -> None:
    expect = _expect()
    server = serve()
    for key in ["checkout.orders", "checkout.visits", "signup.visits"]:
        server.post(key, 1)
    page = open_page(f"{server.url}/?refresh=300")
    expect(_rows(page)).to_have_count(3, timeout=UPDATE)

    page.fill("#filter", "checkout.")  # typed, no Enter: the list and the address follow
    expect(_rows(page).locator(".key")).to_have_text(["checkout.orders", "checkout.visits"], timeout=UPDATE)
    expect(page).to_have_url(re.compile(r"[?&]prefix=checkout\.(&|$)"))
    page.reload()  # as the README says: a reload (or the address shared) shows the same keys
    expect(page.locator("#filter")).to_have_value("checkout.")
    expect(_rows(page).locator(".key")).to_have_text(["checkout.orders", "checkout.visits"], timeout=UPDATE)

    page.fill("#filter", "nothing.")
    expect(_rows(page)).to_have_count(0, timeout=UPDATE)
    expect(page.locator("#empty-text")).to_have_text("No live key starts with “nothing.”.")

    page.fill("#filter", "no spaces")
    expect(page.locator("#banner")).to_contain_text("(400)", timeout=UPDATE)
    expect(_rows(page)).to_have_count(0)

    page.fill("#filter", "")
    expect(_rows(page)).to_have_count(3, timeout=UPDATE)
    expect(page.locator("#banner")).to_be_hidden()


def _list_answer(keys: list[str], next_cursor: str | None) -> str:
    metrics = [{"key": key, "value": int(key.rsplit(".", 1)[1])} for key in keys]
    return json.dumps({"metrics": metrics, **({"next": next_cursor} if next_cursor else {})})


@WIDTHS
def test_pages_on_with_the_cursor_the_api_gives(serve, open_page, width: int, height: int) -> None:
    """The list answers as the paging API does (docs/api.md#listing-keys): a first page with
    ``next``, a last page without; the page follows the cursor both ways."""
    expect = _expect()
    server = serve()
    keys = [f"key.{number:03d}" for number in range(150)]
    for key in keys:  # real keys, so each row's sparkline comes from the real API
        server.post(key, int(key.rsplit(".", 1)[1]))
    asked: list[dict[str, list[str]]] = []

    def paging_api(route: Any) -> None:
        query = parse_qs(urlsplit(route.request.url).query, keep_blank_values=True)
        asked.append(query)
        limit = int(query["limit"][0])
        if "after" not in query:
            body = _list_answer(keys[:limit], "opaque-cursor-1")
        else:
            assert query["after"] == ["opaque-cursor-1"]
            body = _list_answer(keys[100:][:limit], None)
        route.fulfill(status=200, content_type="application/json", body=body)

    page = open_page(f"{server.url}/?refresh=60000", width=width, height=height, route=paging_api)
    expect(_rows(page)).to_have_count(100, timeout=UPDATE)
    expect(_rows(page).last).to_have_attribute("data-key", "key.099")
    expect(page.locator("#truncated")).to_have_text("Showing the first 100 keys in key order; the next page has more.")
    expect(page.locator("#page-number")).to_have_text("Page 1")
    expect(page.locator("#previous-page")).to_be_disabled()
    assert asked == [{"prefix": [""], "limit": ["100"]}]  # one request: the cursor says there is more

    page.click("#next-page")
    expect(_rows(page)).to_have_count(50, timeout=UPDATE)
    expect(_rows(page).first).to_have_attribute("data-key", "key.100")
    _expect_rows(page, keys[100:], [str(number) for number in range(100, 150)])
    expect(page.locator("#truncated")).to_have_text("Showing keys 101–150 in key order.")
    expect(page.locator("#page-number")).to_have_text("Page 2")
    expect(page.locator("#next-page")).to_be_disabled()
    expect(page.locator("#empty")).to_be_hidden()
    assert asked[1] == {"prefix": [""], "after": ["opaque-cursor-1"], "limit": ["100"]}
    assert page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0

    page.click("#previous-page")
    expect(_rows(page).first).to_have_attribute("data-key", "key.000", timeout=UPDATE)
    expect(_rows(page)).to_have_count(100)
    expect(page.locator("#next-page")).to_be_enabled()

    page.click("#next-page")
    expect(_rows(page)).to_have_count(50, timeout=UPDATE)
    page.fill("#filter", "key.")  # a new filter starts again from the first page
    expect(_rows(page).first).to_have_attribute("data-key", "key.000", timeout=UPDATE)
    assert "after" not in asked[-1] and asked[-1]["prefix"] == ["key."]


def test_without_a_cursor_shows_the_first_100_keys_and_says_there_are_more(serve, open_page) -> None:
    """An API without paging (no ``next``, ever): the page asks for one key more to
    know whether the list stopped at the limit, and says so as before."""
    expect = _expect()
    server = serve()
    for number in range(101):
        server.post(f"key.{number:03d}", number)
    asked: list[str] = []

    def without_next(route: Any) -> None:
        asked.append(parse_qs(urlsplit(route.request.url).query, keep_blank_values=True)["limit"][0])
        answer = route.fetch()
        body = answer.json()
        body.pop("next", None)
        route.fulfill(response=answer, body=json.dumps(body))

    page = open_page(f"{server.url}/?refresh=60000", route=without_next)
    expect(_rows(page)).to_have_count(100, timeout=UPDATE)
    expect(_rows(page).last).to_have_attribute("data-key", "key.099")
    expect(page.locator("#truncated")).to_have_text(
        "Showing the first 100 keys in key order: type a prefix above to narrow the list."
    )
    expect(page.locator("#pager")).to_be_hidden()
    assert asked[:2] == ["100", "101"]

    requests.delete(f"{server.url}/metric/key.100", timeout=5)  # exactly 100 keys: a full last page
    page.fill("#filter", "key.")
    expect(page.locator("#truncated")).to_be_hidden(timeout=UPDATE)
    expect(_rows(page)).to_have_count(100)

    page.fill("#filter", "key.1")
    expect(_rows(page)).to_have_count(0, timeout=UPDATE)
    page.fill("#filter", "key.0")
    expect(_rows(page)).to_have_count(100, timeout=UPDATE)
    expect(page.locator("#truncated")).to_be_hidden()


def test_every_key_is_reachable_through_the_real_list_api(serve, open_page) -> None:
    """Against ringsum's own list: with paging every key is shown once, page by page;
    an API without it says there are more than the page shows."""
    expect = _expect()
    server = serve()
    keys = [f"key.{number:03d}" for number in range(230)]
    for key in keys:
        server.post(key, 1)
    page = open_page(f"{server.url}/?refresh=60000")
    expect(_rows(page)).to_have_count(100, timeout=UPDATE)
    expect(page.locator("#truncated")).to_contain_text("Showing the first 100 keys in key order")
    if page.locator("#pager").is_hidden():  # the list API does not page
        expect(page.locator("#truncated")).to_contain_text("type a prefix")
        return
    seen: list[str] = []
    while True:
        shown = _rows(page).evaluate_all("(rows) => rows.map((row) => row.dataset.key)")
        seen += shown
        if page.locator("#next-page").is_disabled():
            break
        page.click("#next-page")
        expect(_rows(page).first).not_to_have_attribute("data-key", shown[0], timeout=UPDATE)
    assert seen == keys


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
    server, page = _showing(serve, open_page, "visits", 4)
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


@pytest.mark.parametrize(("width", "height"), [(320, 640), PHONE, DESKTOP], ids=["small-phone", "phone", "desktop"])
def test_fits_phone_and_desktop_widths_and_never_breaks_a_number(serve, open_page, width: int, height: int) -> None:
    expect = _expect()
    server = serve()
    long_key = "a.very.long.key." + "x" * 184
    largest = 2**53 - 1
    for key, value in [(long_key, 123456789), ("checkout.orders", 12), ("signup.visits", largest)]:
        server.post(key, value)
    server.post("signup.visits", largest)  # a sum past 2**53, where JavaScript numbers round
    for _ in range(2):
        server.post("refunds", -largest)
    page = open_page(f"{server.url}/?refresh=300", width=width, height=height)
    expect(_rows(page)).to_have_count(4, timeout=UPDATE)
    expect(_row(page, "signup.visits").locator(".value")).to_have_text(f"{2 * largest:,}")
    expect(_row(page, "refunds").locator(".value")).to_have_text(f"{-2 * largest:,}")
    expect(_row(page, long_key).locator(".value")).to_have_text("123,456,789")

    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at {width}px wide"
    for index in range(4):
        row = _rows(page).nth(index)
        for part in (row, row.locator(".key"), row.locator(".value"), row.locator("svg.spark")):
            box = _box(part)
            assert box["x"] >= 0 and box["x"] + box["width"] <= width, part
        assert _box(row.locator("svg.spark"))["width"] >= width / 4  # a sparkline, not a speck
    _assert_numbers_on_one_line(page, width, [f"{2 * largest:,}", f"{-2 * largest:,}", "123,456,789", "12"])

    _row(page, "signup.visits").locator(".key").click()  # the chart shows the sum large
    expect(page.locator("#chart-sum")).to_have_text(f"{2 * largest:,}", timeout=UPDATE)
    expect(page.locator("#chart-readout")).to_contain_text(f"{2 * largest:,}")
    _assert_numbers_on_one_line(page, width, [f"{2 * largest:,}"])
    page.keyboard.press("Escape")

    server.stop()  # the banner names the address: its digits stay together too
    expect(page.locator("#banner")).to_be_visible(timeout=UPDATE)
    _assert_numbers_on_one_line(page, width, [server.url.removeprefix("http://")])


def _bars(page: Any) -> Any:
    return page.locator("#chart-svg rect.chart-bar")


def _local(unix_seconds: float, zone: str, with_seconds: bool) -> str:
    moment = datetime.fromtimestamp(unix_seconds, UTC).astimezone(ZoneInfo(zone))
    text = moment.strftime("%I:%M:%S %p" if with_seconds else "%I:%M %p")
    return text.removeprefix("0")


@WIDTHS
def test_a_key_opens_a_larger_chart_of_its_window(serve, open_page, width: int, height: int) -> None:
    expect = _expect()
    zone = "Asia/Kolkata"  # UTC+05:30: local time is not UTC, and half-hours are round
    server = serve()
    server.post("checkout.orders", 5)
    server.clock.advance(10 * MINUTE_US)
    server.post("checkout.orders", 7)
    server.clock.advance(20 * MINUTE_US)
    server.post("checkout.orders", 11)
    server.post("signup.visits", 1)
    now = server.clock.now_us / 1e6
    page = open_page(f"{server.url}/?refresh=300", width=width, height=height, timezone=zone)
    _expect_rows(page, ["checkout.orders", "signup.visits"], ["23", "1"])
    dialog = page.locator("#chart")
    opener = _row(page, "checkout.orders").locator(".key")

    opener.click()
    expect(dialog).to_be_visible()
    expect(page.get_by_role("dialog", name="checkout.orders")).to_be_visible()
    expect(page.locator("#chart-sum")).to_have_text("23", timeout=UPDATE)
    assert page.evaluate("document.getElementById('chart').contains(document.activeElement)")
    # 1h in 30s steps: 120 steps and the partly-gone oldest one, whole ticks.
    expect(_bars(page)).to_have_count(121)
    last_step = now // 30 * 30
    readout = page.locator("#chart-readout")
    expect(readout).to_have_text(f"{_local(last_step, zone, True)}–{_local(last_step + 30, zone, True)}: 11 (1 value)")

    # The time axis: local times at whole minutes inside the window, left to right,
    # not overlapping one another.
    labels = page.locator("#chart-svg text.chart-label").evaluate_all(
        """(texts) => texts.filter((text) => /[AP]M$/.test(text.textContent)).map((text) => {
             const { x, width } = text.getBoundingClientRect();
             return { text: text.textContent, x, width };
           })"""
    )
    texts = [label["text"] for label in labels]
    assert 3 <= len(texts) <= 12, texts
    window_start = last_step - 3600
    expected = {_local(t, zone, False) for t in range(int(window_start), int(last_step + 31), 60)}
    assert set(texts) <= expected, texts
    for left, right in itertools.pairwise(labels):
        assert left["x"] + left["width"] <= right["x"], "time labels overlap"
    assert labels[0]["x"] >= 0 and labels[-1]["x"] + labels[-1]["width"] <= width

    # Hover (or a tap) reads a step; so do the arrow keys on the focused chart.
    first_value = (START_US / 1e6) // 30 * 30
    index = int((first_value - (last_step - 3600)) // 30)
    _bars(page).nth(index).hover()
    expect(readout).to_have_text(
        f"{_local(first_value, zone, True)}–{_local(first_value + 30, zone, True)}: 5 (1 value)"
    )
    page.locator("#chart-svg").focus()
    page.keyboard.press("ArrowRight")
    expect(readout).to_have_text(re.compile(r": 0 \(no values\)$"))
    page.keyboard.press("End")
    expect(readout).to_contain_text(": 11")
    page.keyboard.press("ArrowLeft")
    expect(readout).to_have_text(re.compile(r": 0 \(no values\)$"))

    chart_box = _box(page.locator("#chart-svg"))
    assert chart_box["width"] >= min(width * 0.75, 800) and chart_box["height"] >= 150
    dialog_box = _box(dialog)
    assert dialog_box["x"] >= 0 and dialog_box["x"] + dialog_box["width"] <= width
    assert dialog_box["y"] >= 0 and dialog_box["y"] + dialog_box["height"] <= height

    # Escape closes it and puts focus back on the key; Enter and Space open it from
    # the keyboard; the Close button closes it.
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(opener).to_be_focused()
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    expect(page.locator("#chart-sum")).to_have_text("23", timeout=UPDATE)
    page.click("#chart-close")
    expect(dialog).to_be_hidden()
    expect(opener).to_be_focused()
    other = _row(page, "signup.visits").locator(".key")
    other.focus()
    page.keyboard.press(" ")
    expect(page.locator("#chart-title")).to_have_text("signup.visits")
    expect(page.locator("#chart-sum")).to_have_text("1", timeout=UPDATE)

    # Open, it follows new values like the rest of the page.
    server.post("signup.visits", 4)
    expect(page.locator("#chart-sum")).to_have_text("5", timeout=UPDATE)
    expect(readout).to_contain_text(": 5 (2 values)")  # the step's count beside its sum
    page.keyboard.press("Escape")
    expect(other).to_be_focused()

    # Closed and opened again within one task (Escape, then Enter at once): the close
    # event, which comes after, must not undo the new opening.
    page.evaluate(
        """() => {
             document.getElementById("chart").close();
             document.querySelector('li[data-key="signup.visits"] .key').click();
           }"""
    )
    expect(page.locator("#chart-sum")).to_have_text("5", timeout=UPDATE)
    expect(dialog).to_be_visible()
    expect(page.locator("#chart-title")).to_have_text("signup.visits")
    assert page.evaluate("document.getElementById('chart').contains(document.activeElement)")


def test_the_chart_of_a_key_that_aged_out_shows_zero(serve, open_page) -> None:
    expect = _expect()
    server, page = _showing(serve, open_page, "visits", 3)
    _row(page, "visits").click()  # anywhere on the row, not only the key
    expect(page.locator("#chart-sum")).to_have_text("3", timeout=UPDATE)
    server.clock.advance(61 * MINUTE_US)
    expect(page.locator("#chart-sum")).to_have_text("0", timeout=UPDATE)
    expect(page.locator("#chart-readout")).to_have_text(re.compile(r": 0 \(no values\)$"))
    expect(_rows(page)).to_have_count(0)
    page.keyboard.press("Escape")
    expect(page.locator("#filter")).to_be_focused()  # its row is gone: focus lands on the filter


def _screenshot(page: Any, name: str, **options: Any) -> bytes:
    """A screenshot; with RINGSUM_UPDATE_SCREENSHOT=1 it becomes docs/<name> too."""
    png = page.screenshot(**options)
    if os.environ.get("RINGSUM_UPDATE_SCREENSHOT") == "1":
        DOCS.mkdir(exist_ok=True)
        (DOCS / name).write_bytes(png)
    return png


def _expect_traffic_drawn(page: Any, shapes: dict[str, list[int]]) -> None:
    """The page as the screenshots show it: every key with its sum and a full sparkline."""
    expect = _expect()
    expect(_rows(page).locator(".key")).to_have_text(sorted(shapes), timeout=UPDATE)
    expect(page.locator("#updated")).to_contain_text("Updated")
    expect(page.locator("#banner")).to_be_hidden()
    for key in shapes:
        expect(_row(page, key).locator(".value")).to_have_text(re.compile(r"^[1-9][\d,]*$"))
        line = _row(page, key).locator("path.spark-line").get_attribute("d")
        assert line.count("L") == 60, f"{key}: {line}"  # 61 points, one per minute


def test_screenshots_for_the_readme(serve, open_page, browser) -> None:
    """The desktop page, a key's chart and the phone page, with an hour of made-up
    traffic, checked where it shows: each sparkline, sum and the chart's bars are drawn
    in the pixels. RINGSUM_UPDATE_SCREENSHOT=1 also writes them to docs/."""
    expect = _expect()
    server = serve()
    shapes = _post_hour_of_traffic(server)

    page = open_page(f"{server.url}/?refresh=60000", width=1280, height=430, now=server.clock)
    _expect_traffic_drawn(page, shapes)
    png = _screenshot(page, "dashboard.png", full_page=True)
    regions = [_box(_row(page, key).locator(part)) for key in sorted(shapes) for part in ("svg.spark", ".value")]
    beside_filter = _box(page.locator("#filter"))  # the background right of the filter: blank
    blank = [{**beside_filter, "x": beside_filter["x"] + beside_filter["width"] + 8, "width": 300.0}]
    ink = _ink(browser, png, regions + blank)
    for box, share in zip(regions, ink, strict=False):
        assert share > 0.02, f"nothing drawn at {box}"
    assert ink[-1] == 0

    page.set_viewport_size({"width": 1280, "height": 720})
    _row(page, "api.requests").locator(".key").click()
    expect(page.locator("#chart-sum")).to_have_text(f"{sum(shapes['api.requests']):,}")
    _bars(page).nth(98).hover()  # one bar per 30 s step, as posted
    expect(page.locator("#chart-readout")).to_contain_text(f": {shapes['api.requests'][98]:,}")
    png = _screenshot(page, "dashboard-chart.png")
    plot, title = _box(page.locator("#chart-svg")), _box(page.locator("#chart-title"))
    plot_ink, title_ink = _ink(browser, png, [plot, title])
    assert plot_ink > 0.1 and title_ink > 0.01

    phone = open_page(f"{server.url}/?refresh=60000", width=PHONE[0], height=PHONE[1], now=server.clock)
    _expect_traffic_drawn(phone, shapes)
    png = _screenshot(phone, "dashboard-phone.png", full_page=True)
    regions = [_box(_row(phone, key).locator("svg.spark")) for key in sorted(shapes)]
    assert all(share > 0.02 for share in _ink(browser, png, regions))
