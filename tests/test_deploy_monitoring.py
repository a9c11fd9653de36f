"""deploy/grafana/ringsum.json and deploy/prometheus/ringsum-rules.yml: their structure,
and every metric their PromQL names is one a real scrape of ringsum shows. With
promtool (Debian's prometheus package; CI installs it, and there it must be present,
RINGSUM_REQUIRE_PROMTOOL=1), the rules pass ``promtool check rules``, their alerts
fire on the series they are meant for (``promtool test rules``), and every dashboard
expression parses as PromQL."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_observability import scrape

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "ringsum.json"
RULES = ROOT / "deploy" / "prometheus" / "ringsum-rules.yml"
# The one series the expressions may name that ringsum does not expose: Prometheus
# writes it for every target it scrapes (1 when the scrape worked).
PROMETHEUS_OWN = {"up"}
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$top": "10", "$job": ".*", "$instance": ".*"}

# -- a small PromQL reader: the metric names an expression selects ---------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS |= {"inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects: identifiers that are not functions (followed by
    a parenthesis), keywords, label names in matchers or groupings, or inside strings."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers (strings, which may hold braces, are gone)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    text = _GROUPING.sub(" ", text)
    return {
        match.group(1)
        for match in _IDENTIFIER.finditer(text)
        if match.group(2) is None and match.group(1).lower() not in _KEYWORDS
    }


def with_variables(expr: str) -> str:
    """A Grafana expression as Prometheus would get it."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def test_the_reader_finds_the_metrics_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{job=~"x{1}", le!="+Inf"}[5m])))'
        " / on (instance) group_left(backend) b_info and ignoring(x) c:recorded offset 1h > 1e3 unless absent(d)"
    )
    assert metric_names(expr) == {"a_bucket", "b_info", "c:recorded", "d"}
    assert metric_names("sum(rate(x_total[$__rate_interval])) by (job)") == {"x_total"}
    assert metric_names('topk(10, max by (key) (ringsum_window_sum{key="up"}))') == {"ringsum_window_sum"}


@pytest.fixture(scope="module")
def exposed(tmp_path_factory) -> set[str]:
    """Every series name a scrape of ringsum shows: memory storage with a data
    dir and RINGSUM_EXPORT set shows them all (Redis shows fewer, none of its own)."""
    from ringsum import create_app
    from ringsum.web.state import close_app

    app = create_app(
        {"RINGSUM_STORAGE_URI": "memory://", "RINGSUM_DATA_DIR": str(tmp_path_factory.mktemp("data"))}
        | {"RINGSUM_EXPORT": "*"}
    )
    try:
        client = app.test_client()
        client.post("/metric/orders.eu", json={"value": 3})
        samples = scrape(client)
    finally:
        close_app(app)
    return set(samples)  # sample names, as Prometheus stores them: counters end in _total


def all_dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [with_variables(target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            selector = re.fullmatch(r"label_values\((.*),\s*\w+\)", variable["query"]["query"])
            assert selector, variable["query"]
            exprs.append(with_variables(selector.group(1)))
    return exprs


# -- the dashboard ---------------------------------------------------------------------


def test_the_dashboard_is_a_grafana_dashboard_of_a_current_schema() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "ringsum" and dashboard["title"]
    assert dashboard["schemaVersion"] >= 39  # Grafana 11 and later
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        assert panel["type"] in {"row", "stat", "timeseries", "bargauge"}, panel["type"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"])
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["expr"].strip()


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    names = set().union(*map(metric_names, all_dashboard_exprs()))
    for wanted in (
        "ringsum_window_sum",  # the exported sums, top N
        "ringsum_http_requests_total",  # request rate
        "ringsum_http_request_duration_seconds_bucket",  # latency percentiles
        "ringsum_storage_errors_total",  # errors by cause
        "ringsum_keys",  # keys held
        "ringsum_storage_info",  # the journal
        "ringsum_edge_refusals_total",  # edge refusals by reason
    ):
        assert wanted in names, wanted
    assert "topk($top, max by (key) (ringsum_window_sum" in DASHBOARD.read_text()


def test_every_dashboard_expression_names_only_metrics_ringsum_exposes(exposed: set[str]) -> None:
    for expr in all_dashboard_exprs():
        unknown = metric_names(expr) - exposed - PROMETHEUS_OWN
        assert not unknown, f"{expr} names {unknown}"


# -- the alerting rules ----------------------------------------------------------------


def rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_rules_file_has_the_alerts_the_issue_asks_for() -> None:
    document = yaml.safe_load(RULES.read_text())
    assert all(group["name"] and group["rules"] for group in document["groups"])
    found = {rule["alert"]: rule for rule in rules()}
    expected = {"RingsumDown", "RingsumNotReady", "RingsumHigh5xxRate", "RingsumStorageUnreachable"}
    expected |= {"RingsumJournalWritesFailing", "RingsumKeysNearLimit"}
    assert expected <= set(found)
    for name, rule in found.items():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    assert "ringsum_max_keys" in metric_names(found["RingsumKeysNearLimit"]["expr"])


def test_every_rule_names_only_metrics_ringsum_exposes(exposed: set[str]) -> None:
    for rule in rules():
        unknown = metric_names(rule["expr"]) - exposed - PROMETHEUS_OWN
        assert not unknown, f"{rule['alert']} names {unknown}"


# -- promtool --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("RINGSUM_REQUIRE_PROMTOOL") == "1":
            pytest.fail("RINGSUM_REQUIRE_PROMTOOL=1 but promtool is missing (apt-get install prometheus)")
        pytest.skip("promtool is missing (apt-get install prometheus)")
    return found


def run_promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)


def test_promtool_checks_the_rules(promtool: str) -> None:
    checked = run_promtool(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_every_dashboard_expression_parses_as_promql(promtool: str, tmp_path: Path) -> None:
    """Each one as a recording rule, which promtool parses."""
    exprs = all_dashboard_exprs()
    recorded = [{"record": f"dashboard:expr_{index}", "expr": expr} for index, expr in enumerate(exprs)]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    checked = run_promtool(promtool, "check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_alerts_fire_on_the_series_they_are_for(promtool: str, tmp_path: Path) -> None:
    """``promtool test rules``: two instances, one healthy on memory, one failing; each
    alert fires for the failing one only (Redis storage, with its unreachable errors,
    never counts as a failing journal)."""
    instance = {"good": 'job="ringsum", instance="good:5000"', "bad": 'job="ringsum", instance="bad:5000"'}
    redis = 'job="ringsum", instance="redis:5000"'
    series = [
        (f"up{{{instance['good']}}}", "1x20"),
        (f"up{{{instance['bad']}}}", "0x20"),
        (f"ringsum_ready{{{instance['good']}}}", "1x20"),
        (f"ringsum_ready{{{instance['bad']}}}", "0x20"),
        (f'ringsum_storage_info{{{instance["good"]}, backend="memory", journal="everysec"}}', "1x20"),
        (f'ringsum_storage_info{{{instance["bad"]}, backend="memory", journal="always"}}', "1x20"),
        (f'ringsum_storage_info{{{redis}, backend="redis", journal="off"}}', "1x20"),
        (f'ringsum_storage_errors_total{{{instance["good"]}, error="unavailable"}}', "0x20"),
        (f'ringsum_storage_errors_total{{{instance["bad"]}, error="unavailable"}}', "0+60x20"),
        (f'ringsum_storage_errors_total{{{redis}, error="unavailable"}}', "0+60x20"),
        (
            f'ringsum_http_requests_total{{{instance["good"]}, route="/metric/<key>", method="POST", status="200"}}',
            "0+600x20",
        ),
        (
            f'ringsum_http_requests_total{{{instance["bad"]}, route="/metric/<key>", method="POST", status="503"}}',
            "0+60x20",
        ),
        (
            f'ringsum_http_requests_total{{{instance["bad"]}, route="/metric/<key>", method="POST", status="200"}}',
            "0+60x20",
        ),
        (f"ringsum_keys{{{instance['good']}}}", "10x20"),
        (f"ringsum_keys{{{instance['bad']}}}", "95x20"),
        (f"ringsum_max_keys{{{instance['good']}}}", "100x20"),
        (f"ringsum_max_keys{{{instance['bad']}}}", "100x20"),
    ]
    bad = {"job": "ringsum", "instance": "bad:5000"}
    fired = {
        "RingsumDown": [bad],
        "RingsumNotReady": [bad],
        "RingsumStorageUnreachable": [bad, {"job": "ringsum", "instance": "redis:5000"}],
        "RingsumHigh5xxRate": [bad],
        "RingsumJournalWritesFailing": [bad],
        "RingsumKeysNearLimit": [bad],
    }
    # The expressions are under test, not the wording: the rules without their annotations.
    document = yaml.safe_load(RULES.read_text())
    severity = {}
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
            severity[rule["alert"]] = rule["labels"]["severity"]
    rules_file = tmp_path / "ringsum-rules.yml"
    rules_file.write_text(yaml.safe_dump(document))
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": name, "values": values} for name, values in series],
                "alert_rule_test": [
                    {
                        "eval_time": "15m",
                        "alertname": name,
                        "exp_alerts": [{"exp_labels": {**labels, "severity": severity[name]}} for labels in firing],
                    }
                    for name, firing in fired.items()
                ],
            }
        ],
    }
    path = tmp_path / "ringsum-rules-test.yml"
    path.write_text(yaml.safe_dump(tests))
    tested = run_promtool(promtool, "test", "rules", str(path))
    assert tested.returncode == 0, tested.stdout + tested.stderr
