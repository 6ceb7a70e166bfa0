"""Jobs on the three-node cluster behind HAProxy (tests/cluster/conftest.py): a node killed
with SIGKILL in the middle of a job run has the run finished on another node, as the next
attempt. Real nodes on the real clock: waits have deadlines, nothing sleeps a fixed time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from modhub.db import Database
from modhub.db.models import ClusterNode, JobRun, StoredValue
from modhub.jobs.store import INTERRUPTED
from tests.cluster.conftest import Cluster, finish, upload
from tests.jobs.test_cluster import descendants
from tests.lifecycle.conftest import as_bundle, wait_for

# Attempt 1 notes in the module's store that it started, then outlasts the test; a later
# attempt answers at once.
ONCE = (
    "import time\n\n\ndef handler(context):\n"
    "    context.store.set(f'started-{context.attempt}', context.run_id)\n"
    "    if context.attempt == 1:\n"
    "        time.sleep(600)\n"
    "    return {'attempt': context.attempt}\n"
)


def write_relay(root: Path) -> Path:
    """Return the bundle of `relay`: one job, `once` (ONCE), retried once."""
    folder = root / "sources" / "relay"
    (folder / "jobs").mkdir(parents=True)
    manifest = {
        "name": "relay",
        "version": "1.0.0",
        "displayName": "Relay",
        "capabilities": {
            "jobs": {
                "handlers": [
                    {"name": "once", "handler": "jobs/once.py", "retries": 1, "timeout": 900_000}
                ]
            }
        },
    }
    (folder / "module.json").write_text(json.dumps(manifest), "utf-8")
    (folder / "jobs" / "once.py").write_text(ONCE)
    return as_bundle(folder, "tar.gz")


def attempts(db: Database) -> list[JobRun]:
    with db.read() as session:
        return list(session.scalars(select(JobRun).where(JobRun.module == "relay")))


def test_a_node_killed_during_a_job_run_has_the_run_finished_on_another_node(
    cluster: Cluster, tmp_path: Path
) -> None:
    auth = cluster.login()
    uploaded = upload(cluster.url, auth, write_relay(tmp_path))
    assert uploaded.status_code == 201, uploaded.text
    enabled = httpx.put(
        f"{cluster.url}/api/v1/modules/relay/status",
        json={"status": "ENABLED"},
        headers=auth,
        timeout=60,
    )
    assert finish(cluster.url, auth, enabled)["status"] == "succeeded"
    queued = httpx.post(f"{cluster.url}/api/v1/modules/relay/jobs/once/run", headers=auth)
    assert queued.status_code == 202, queued.text
    run_id = queued.json()["id"]

    db = Database(cluster.database_url)
    leftovers: list[int] = []
    try:

        def started() -> bool:
            with db.read() as session:
                key = session.scalar(
                    select(StoredValue.key).where(
                        StoredValue.module == "relay", StoredValue.key == "started-1"
                    )
                )
                return key is not None

        wait_for(started, 120, f"attempt 1 to start\n{cluster.output()}")
        (first,) = attempts(db)
        assert (first.id, first.status, first.attempt) == (run_id, "running", 1)
        with db.read() as session:
            pids = [
                node.pid
                for node in session.scalars(select(ClusterNode))
                if node.state.get("runner") == first.owner
            ]
        (victim,) = [n for n in cluster.nodes if n.process.pid in pids]
        leftovers = descendants(victim.process.pid)
        cluster.kill(victim)

        def finished() -> list[JobRun] | None:
            rows = sorted(attempts(db), key=lambda r: r.attempt)
            return rows if rows[-1].status in ("succeeded", "failed") else None

        failed, retried = wait_for(finished, 90, f"the retry to finish\n{cluster.output()}")
        assert (failed.id, failed.status, failed.error) == (run_id, "failed", INTERRUPTED)
        assert (retried.status, retried.attempt, retried.trigger) == ("succeeded", 2, "retry")
        assert retried.scheduled_at == failed.scheduled_at
        assert retried.owner != failed.owner
        assert retried.result == {"value": {"attempt": 2}}
        # Its history answers through the balancer, on whichever node.
        history: dict[str, Any] = httpx.get(
            f"{cluster.url}/api/v1/jobs/runs",
            params={"module": "relay"},
            headers=auth,
            timeout=30,
        ).json()
        assert sorted((r["attempt"], r["status"]) for r in history["items"]) == [
            (1, "failed"),
            (2, "succeeded"),
        ]
    finally:
        db.dispose()
        for pid in leftovers:  # the killed node's workers, orphaned
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
