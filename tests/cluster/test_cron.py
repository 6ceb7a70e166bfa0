"""Cron on three real nodes behind HAProxy: each tick of a minutely job fires once across
the cluster over three scheduled minutes, on the nodes' shared test clock
(`modhub/cluster/clock.py`), so the three minutes pass in seconds."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.cluster.conftest import Cluster, finish, through_minutes, ticked_at, upload
from tests.cluster.test_workers import cron_module

START = datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_each_minute_fires_once_across_three_nodes(cluster: Cluster, tmp_path: Path) -> None:
    clock = Path(cluster.env["MODHUB_TEST_CLOCK"])
    cluster.set_clock(START)  # before the job exists: it starts from this time
    ticked_at(cluster.database_url, 3, START)
    auth = cluster.login()
    assert upload(cluster.url, auth, cron_module(tmp_path)).status_code == 201
    enabled = httpx.put(
        f"{cluster.url}/api/v1/modules/minutely/status",
        json={"status": "ENABLED"},
        headers=auth,
        timeout=120,
    )
    assert finish(cluster.url, auth, enabled)["status"] == "succeeded"

    def runs() -> list[dict[str, Any]]:
        answer = httpx.get(
            f"{cluster.url}/api/v1/jobs/runs",
            params={"module": "minutely", "limit": 100},
            headers=auth,
        )
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    def finished(minute: datetime) -> bool:
        return any(r["scheduledAt"] == stamp(minute) and r["status"] == "succeeded" for r in runs())

    through_minutes(clock, cluster.database_url, 3, START, 3, finished)

    scheduled = sorted(r["scheduledAt"] for r in runs() if r["trigger"] == "schedule")
    assert scheduled == [f"2030-01-01T00:0{m}:00Z" for m in (1, 2, 3)], runs()
    assert {r["status"] for r in runs()} == {"succeeded"}
