"""The apps ringsum is measured against, served by the same server with the same settings.

- ``bare``: the framework floor. The same routes, parse the body, answer ``{}`` /
  ``{"value": 0}``, nothing stored.
- ``naive``: the design ringsum grew from. A dict of deques of ``(datetime, value)``,
  no rounding, no validation, the whole deque summed on every read.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from datetime import datetime, timedelta

from flask import Flask, request

WINDOW = timedelta(hours=1)


def bare_app() -> Flask:
    app = Flask("bare")

    @app.post("/metric/<key>")
    def record(key: str) -> dict:
        json.loads(request.get_data())
        return {}

    @app.get("/metric/<key>/sum")
    def total(key: str) -> dict:
        return {"value": 0}

    return app


def naive_app() -> Flask:
    app = Flask("naive")
    events: defaultdict[str, deque[tuple[datetime, float]]] = defaultdict(deque)

    @app.post("/metric/<key>")
    def record(key: str) -> dict:
        events[key].append((datetime.now(), request.get_json(force=True)["value"]))
        return {}

    @app.get("/metric/<key>/sum")
    def total(key: str) -> dict:
        queue = events[key]
        cutoff = datetime.now() - WINDOW
        while queue and queue[0][0] < cutoff:
            queue.popleft()
        return {"value": sum(value for _, value in queue)}

    return app
