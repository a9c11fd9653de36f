"""README "Metrics" names every family /metrics shows, and nothing it does not show;
every counter of an error or a refusal is there at 0 from the first scrape (an alert on
it never sees "no data")."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

README = Path(__file__).resolve().parent.parent / "README.md"
# Counters whose label values come from the requests themselves: no sample before one.
LABELLED_BY_REQUESTS = {"ringsum_http_requests_total"}


def readme_families() -> set[str]:
    """The series names in the first column of the "| series | what |" table under "### Metrics"."""
    section = README.read_text().split("\n### Metrics\n", 1)[1]
    table = section.split("\n| series | what |\n", 1)[1].split("\n\n", 1)[0]
    names: set[str] = set()
    for row in table.splitlines()[1:]:  # after the | --- | --- | line
        first_cell = row.split(" | ", 1)[0]
        names |= {re.sub(r"\{.*", "", name) for name in re.findall(r"`([^`]+)`", first_cell)}
    return names


def scraped_families(client) -> dict[str, tuple[str, int]]:
    """{family name as the README says it (counters with _total): (type, samples)}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    found = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        name = f"{family.name}_total" if family.type == "counter" else family.name
        found[name] = (family.type, len(family.samples))
    return found


def test_the_readme_names_every_family_a_scrape_shows(make_memory_app, tmp_path) -> None:
    """Memory storage with a data dir and RINGSUM_EXPORT shows every family there is."""
    client = make_memory_app(RINGSUM_DATA_DIR=str(tmp_path), RINGSUM_EXPORT="*").test_client()
    client.post("/metric/a", json={"value": 1})
    assert set(scraped_families(client)) == readme_families()


def test_every_family_other_storages_show_is_in_the_readme(make_app) -> None:
    client = make_app(RINGSUM_EXPORT="*").test_client()
    client.post("/metric/a", json={"value": 1})
    assert set(scraped_families(client)) <= readme_families()


def test_every_counter_has_its_samples_from_the_first_scrape(make_app) -> None:
    """Before any request: each counter with fixed labels (errors by cause, refusals by
    reason, conflicts...) already reads 0."""
    found = scraped_families(make_app().test_client())
    counters = {name for name, (kind, _) in found.items() if kind == "counter"}
    assert counters >= {
        "ringsum_storage_errors_total",
        "ringsum_edge_refusals_total",
        "ringsum_idempotency_conflicts_total",
        "ringsum_idempotent_replays_total",
        "ringsum_values_recorded_total",
    }
    empty = {name for name in counters if found[name][1] == 0}
    assert empty <= LABELLED_BY_REQUESTS, empty
