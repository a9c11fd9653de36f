"""GET /openapi.json: true to the routes, and schemathesis finds nothing wrong with it.

The fuzzing runs in-process against a real app (memory storage, a token set and
sent), deterministically, with enough examples per operation that the whole run
sends well over 1,000 requests.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from flask import request
from hypothesis import HealthCheck, settings

from ringsum import create_app

DOCUMENT = json.loads((Path(__file__).parent.parent / "ringsum" / "web" / "openapi.json").read_text())
TOKEN = "fuzzing-token"
EXAMPLES_PER_OPERATION = 200
REDIS_EXAMPLES_PER_OPERATION = 30
MIN_REQUESTS = 1000

# Not part of the JSON API, so not in the document: the dashboard's HTML page and
# static files (its blueprint), and Flask's static route.
HTML_ENDPOINTS = re.compile(r"^(static|dashboard\..+)$")
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}  # Flask answers these on every rule by itself

fuzzed_app = create_app({"RINGSUM_STORAGE_URI": "memory://", "RINGSUM_API_TOKEN": TOKEN})
cases_run: set[str] = set()
# Every built-in check, with two adjustments:
# - positive_data_acceptance expects every request the schema allows to succeed,
#   but some limits are settings (a window longer than RINGSUM_WINDOW, a step
#   that is not a whole number of ticks) that a static document can only
#   describe in words; those answers are documented 400s.
# - a schema-violating request is rejected with a 413 too, when it is a batch so
#   long that it is larger than RINGSUM_MAX_BODY.
CHECKS = {
    "checks": {
        "positive_data_acceptance": {"enabled": False},
        "negative_data_rejection": {"expected-statuses": [400, 401, 404, 405, 413, 422]},
    }
}
answered: Counter[str] = Counter()  # every request the app answered, probes of the checks included


@fuzzed_app.after_request
def count_answer(response):
    answered[f"{request.method} {request.url_rule.rule if request.url_rule else request.path}"] += 1
    return response


schema = schemathesis.openapi.from_wsgi("/openapi.json", fuzzed_app, config=schemathesis.Config.from_dict(CHECKS))
# Schemathesis leaves out the document's own path; the tests above cover it.
FUZZED_OPERATIONS = {result.ok().label for result in schema.get_all_operations()}


def openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def documented_operations() -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in DOCUMENT["paths"].items() for method in item}


def routed_operations(app) -> set[tuple[str, str]]:
    return {
        (openapi_path(rule.rule), method)
        for rule in app.url_map.iter_rules()
        if not HTML_ENDPOINTS.match(rule.endpoint)
        for method in rule.methods - IMPLICIT_METHODS
    }


def test_every_route_is_documented_and_nothing_else(client) -> None:
    assert routed_operations(client.application) == documented_operations()


def test_the_document_is_served_as_is(client) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == DOCUMENT
    assert DOCUMENT["openapi"].startswith("3.1")


def test_every_operation_documents_its_problems() -> None:
    """Each route's 4xx/5xx answers are problem+json; guarded ones list the 401."""
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            guarded = path == "/metrics" or path.startswith("/metric")
            statuses = set(operation["responses"])
            assert ("401" in statuses) == guarded, (method, path)
            for status in statuses - {"200", "204"}:
                response = DOCUMENT["components"]["responses"][operation["responses"][status]["$ref"].split("/")[-1]]
                assert list(response["content"]) == ["application/problem+json"], (method, path, status)


@pytest.mark.parametrize(
    "method, path, operation",
    [
        ("POST", "/metric/a%2Fsum", "/metric/{key}"),
        ("DELETE", "/metric/a%2Fseries", "/metric/{key}"),
        ("POST", "/metric/a%2Fb", "/metric/{key}"),
        ("GET", "/metric/a%2Fb/sum", "/metric/{key}/sum"),
        ("GET", "/metric//series", "/metric/{key}/series"),  # merged slashes: /metric/series
        ("GET", "/metric//sum", "/metric/{key}/sum"),
    ],
)
def test_keys_holding_a_slash_get_a_documented_answer(client, method: str, path: str, operation: str) -> None:
    """WSGI decodes %2F before routing, so such a key can land on no route or another one."""
    response = client.open(path, method=method)
    assert str(response.status_code) in DOCUMENT["paths"][operation][method.lower()]["responses"]
    assert response.mimetype == "application/problem+json"


FUZZING = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@schema.parametrize()
@FUZZING
def test_fuzzing_finds_no_failure(case: schemathesis.Case) -> None:
    cases_run.add(case.operation.label)
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.fixture(scope="module", autouse=True)
def fuzzing_sent_enough_requests() -> Iterator[None]:
    """Checked once the whole module has run, whatever order its tests ran in: when every
    operation was fuzzed, the fuzzing answered at least MIN_REQUESTS requests."""
    yield
    if cases_run == FUZZED_OPERATIONS:
        assert sum(answered.values()) >= MIN_REQUESTS, answered


# -- a shorter run on the Redis backends, whose Lua scripts see the same inputs ------


@pytest.fixture
def redis_schema(backend: str, make_app):
    if backend == "memory":
        pytest.skip("memory storage is fuzzed in full above")
    app = make_app(RINGSUM_API_TOKEN=TOKEN)
    return schemathesis.openapi.from_wsgi("/openapi.json", app, config=schemathesis.Config.from_dict(CHECKS))


@schemathesis.pytest.from_fixture("redis_schema").parametrize()
@settings(FUZZING, max_examples=REDIS_EXAMPLES_PER_OPERATION)
def test_fuzzing_on_redis_finds_no_failure(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})
