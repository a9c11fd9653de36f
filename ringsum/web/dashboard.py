"""``GET /``: a page that shows every live key, its sum and a sparkline of its window,
and a larger chart of one key's window on demand.

The page is static HTML plus one small script that polls the JSON API; this module
only works out what the script needs to know (series step, refresh interval, whether
a token is asked for) and hands it over in data attributes, so the page needs no
inline script and works with no internet at all.
"""

from __future__ import annotations

from flask import Blueprint, Response, render_template, request

from ..core.units import format_duration
from . import state

bp = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static", static_url_path="/dashboard")

SPARKLINE_POINTS = 60
# The larger chart: fine enough to see when in the window values came, coarse enough
# that each step stays a few pixels wide on a phone.
CHART_MIN_STEPS, CHART_MAX_STEPS = 60, 120
# Steps people read at a glance on a time axis, in microseconds.
_ROUND_STEPS_US = [
    seconds * 1_000_000
    for seconds in (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200)
] + [day * 86_400_000_000 for day in (1, 2, 3, 7)]
DEFAULT_REFRESH_MS = 5000
# Faster than this only loads the server; slower than this no longer looks live.
MIN_REFRESH_MS, MAX_REFRESH_MS = 250, 60_000

# No inline script or style, no third party: everything comes from this origin.
_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def sparkline_step_us(window_us: int, slot_us: int) -> int:
    """The step that cuts the window into about 60 points: whole ticks, as the series
    endpoint takes them, and never less than one tick for windows of few ticks."""
    ticks = window_us // slot_us
    return max(1, round(ticks / SPARKLINE_POINTS)) * slot_us


def chart_step_us(window_us: int, slot_us: int) -> int:
    """The step that cuts the window into 60 to 120 steps of whole ticks: a round
    duration (30s, 1m, 5m...) when one fits, else the shortest step giving at most 120,
    and never less than one tick for windows of few ticks."""
    ticks = window_us // slot_us
    shortest = max(1, -(-ticks // CHART_MAX_STEPS)) * slot_us
    for step_us in _ROUND_STEPS_US:
        if step_us >= shortest and step_us % slot_us == 0 and window_us // step_us >= CHART_MIN_STEPS:
            return step_us
    return shortest


def refresh_ms(raw: str | None) -> int:
    """``?refresh=`` in milliseconds, kept within sane bounds; anything unreadable
    means the default, since a page should open whatever its address says."""
    try:
        wanted = int(raw) if raw is not None else DEFAULT_REFRESH_MS
    except ValueError:
        wanted = DEFAULT_REFRESH_MS
    return max(MIN_REFRESH_MS, min(MAX_REFRESH_MS, wanted))


@bp.get("/")
def dashboard() -> Response:
    settings = state.settings()
    step_us = sparkline_step_us(settings.window_us, settings.slot_us)
    page = render_template(
        "dashboard.html",
        window=format_duration(settings.window_us),
        step=format_duration(step_us),
        chart_step=format_duration(chart_step_us(settings.window_us, settings.slot_us)),
        refresh_ms=refresh_ms(request.args.get("refresh")),
        token_required=settings.api_token is not None,
    )
    response = Response(page, mimetype="text/html")
    response.headers["Content-Security-Policy"] = _CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-cache"
    return response
