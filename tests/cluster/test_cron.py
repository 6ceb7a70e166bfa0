"""Cron on three real nodes behind HAProxy: each tick of a minutely job fires once across
the cluster over three scheduled minutes, on the nodes' shared test clock
(`modhub/cluster/clock.py`), so the three minutes pass in seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from modhub.db import Database
from modhub.db.models import RunnerLease
from tests.cluster.conftest import Cluster, finish, upload
from tests.cluster.test_workers import cron_module
from tests.lifecycle.conftest import wait_for

START = datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC)
# Under the job runners' heartbeat (10 s), so each beats at every step, and well within
# their lease (30 s), so no runner sees another's lease expire.
STEP = timedelta(seconds=20)


def test_each_minute_fires_once_across_three_nodes(cluster: Cluster, tmp_path: Path) -> None:
    db = Database(cluster.database_url)

    def everyone_ticked_at(moment: datetime) -> None:
        """Wait until the three nodes' job runners ticked at `moment` (each beats first)."""

        times: list[datetime] = []

        def seen() -> bool:
            with db.read() as session:
                times[:] = session.scalars(select(RunnerLease.seen_at)).all()
            return sum(t == moment for t in times) >= 3

        try:
            wait_for(seen, 60, f"three job runners to tick at {moment}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the runners were seen at {times}") from None

    try:
        cluster.set_clock(START)
        everyone_ticked_at(START)
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

        now = START
        fired: list[datetime] = []
        while now < START + timedelta(minutes=3):
            now += STEP
            cluster.set_clock(now)
            everyone_ticked_at(now)
            minute = now.replace(second=0)
            if minute > START and minute not in fired:  # a minute passed: its run finishes
                fired.append(minute)
                stamp = minute.isoformat().replace("+00:00", "Z")

                def finished(stamp: str = stamp) -> bool:
                    return any(
                        r["scheduledAt"] == stamp and r["status"] == "succeeded" for r in runs()
                    )

                wait_for(finished, 60, f"the run of {minute}")
        cluster.set_clock(now + STEP)  # every node ticked past the last minute once more
        everyone_ticked_at(now + STEP)

        scheduled = sorted(r["scheduledAt"] for r in runs() if r["trigger"] == "schedule")
        assert scheduled == [f"2030-01-01T00:0{m}:00Z" for m in (1, 2, 3)], runs()
        assert {r["status"] for r in runs()} == {"succeeded"}
    finally:
        db.dispose()
