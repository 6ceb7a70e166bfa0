"""docs/metrics.md lists exactly the metrics a scrape exposes (its table is made from the
definitions and collectors: MODHUB_WRITE_DOCS=1 rewrites it), and every metric the Grafana
dashboard queries exists in a real scrape. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from modhub.metrics.catalog import Family, collected, markdown, recorded
from modhub.metrics.collector import DatabaseCollector
from modhub.services import Services
from tests.conftest import PASSWORD, bearer

DOCS = Path(__file__).resolve().parents[2] / "docs"
BEGIN, END = "<!-- metrics table: made by tests/metrics/test_docs.py -->\n", "<!-- end of table -->"
QUERIED = re.compile(r"\bmodhub_[a-z_]+\b")


def scrape(client: TestClient, services: Services) -> dict[str, str]:
    """Return each modhub metric family a real scrape has, with its type."""
    services.auth.create_user("prometheus", "metrics", PASSWORD)
    token = services.auth.create_api_token("prometheus")
    response = client.get("/metrics", headers=bearer(token))
    assert response.status_code == 200
    return {
        family.name: family.type
        for family in text_string_to_metric_families(response.text)
        if family.name.startswith("modhub_")
    }


def catalog(services: Services) -> list[Family]:
    return recorded() + collected([DatabaseCollector(services.db)])


def test_the_metrics_page_lists_every_metric_of_a_scrape(
    client: TestClient, services: Services
) -> None:
    families = catalog(services)
    exposed = scrape(client, services)
    assert {f.name.removesuffix("_total"): f.kind for f in families} == exposed
    table = markdown(families)
    page = (DOCS / "metrics.md").read_text()
    if os.environ.get("MODHUB_WRITE_DOCS") == "1":
        start, end = page.index(BEGIN) + len(BEGIN), page.index(END)
        page = page[:start] + table + page[end:]
        (DOCS / "metrics.md").write_text(page)
    assert BEGIN + table + END in page, "docs/metrics.md is out of date: MODHUB_WRITE_DOCS=1"


def test_every_metric_the_dashboard_queries_exists(client: TestClient, services: Services) -> None:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert exprs, "the dashboard queries nothing"
    queried = {name for expr in exprs for name in QUERIED.findall(expr)}
    exposed = scrape(client, services)
    series = {
        name: family
        for family in catalog(services)
        if family.name.removesuffix("_total") in exposed
        for name in family.series()
    }
    assert sorted(queried - series.keys()) == []
    # It shows every part the issue names.
    shown = {series[name].name.removesuffix("_total") for name in queried}
    for part in (
        "http_request",
        "module_request",
        "worker",
        "job",
        "lifecycle",
        "store",
        "event",
        "cluster",
    ):
        assert any(part in name for name in shown), part
