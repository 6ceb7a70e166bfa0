"""Control groups: a worker and every process it starts share one memory limit and one
process limit, where the machine gives modhub control groups (it does here: cgroup v1).

Without them each process of a worker is bounded on its own (RLIMIT_AS, RLIMIT_NPROC):
the control test at the end shows what a module gets away with then.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modhub.errors import WorkerUnavailable
from modhub.sandbox import WorkerPool
from modhub.sandbox.cgroups import Cgroups
from modhub.sandbox.launch import MAX_TASKS
from tests.conftest import service_missing
from tests.sandbox.conftest import (
    ATTACKS,
    Sandbox,
    answer_json,
    eventually,
    unique,
    with_pool,
)

OK = f"{ATTACKS}:ok"
HOGS = f"{ATTACKS}:fork_hogs"
SIGKILL = -9


@pytest.fixture
def cgroups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip (fail under MODHUB_REQUIRE_SERVICES=1) unless workers get control groups here."""
    monkeypatch.delenv("MODHUB_CGROUPS", raising=False)
    found = Cgroups.detect()
    if found is None:
        service_missing(
            "this machine gives modhub no writable control groups (cgroup v1 memory and "
            "pids, or a cgroup v2 group delegating them), so each worker process is "
            "bounded on its own by rlimits"
        )
    else:
        found.close()


def limit(folder: Path, *names: str) -> str | None:
    """Return the first of the limit files `names` that exists in `folder`."""
    for name in names:
        if (folder / name).exists():
            return (folder / name).read_text().strip()
    return None


@pytest.mark.usefixtures("cgroups")
def test_a_worker_runs_in_a_group_of_its_own_that_goes_with_it(sandbox: Sandbox) -> None:
    runtime = sandbox.runtime(unique("grouped"), memory_mb=96)

    async def body(pool: WorkerPool) -> None:
        await answer_json(pool, runtime, OK)
        worker = pool.workers[runtime.key]
        group = worker.group
        assert group is not None
        assert worker.process.pid in group.pids()
        assert len(group.pids()) >= 2  # the launcher and the worker inside it, at least
        memory = [limit(f, "memory.limit_in_bytes", "memory.max") for f in group.folders]
        assert str(96 * 1024 * 1024) in memory
        assert str(MAX_TASKS) in [limit(f, "pids.max") for f in group.folders]
        await pool.stop_worker(worker)
        assert not any(folder.exists() for folder in group.folders)

    with_pool(sandbox, body)


@pytest.mark.usefixtures("cgroups")
def test_children_share_the_workers_memory_limit(sandbox: Sandbox) -> None:
    # Six children of 40 MiB: each inside the 128 MiB RLIMIT_AS, together 240 MiB.
    hog = sandbox.runtime(unique("hogs"), memory_mb=128, timeout_ms=30_000)
    bystander = sandbox.runtime(unique("bystander"))

    async def body(pool: WorkerPool) -> None:
        try:
            answer = await answer_json(pool, hog, HOGS, query={"children": "6", "mb": "40"})
        except WorkerUnavailable:
            pass  # the kernel killed the worker itself for the group's memory
        else:
            assert SIGKILL in answer["ended"], answer
        assert (await answer_json(pool, bystander, OK))["ok"] is True
        again = await eventually(lambda: answer_json(pool, hog, OK), 30, "the hog to answer")
        assert again["ok"] is True

    with_pool(sandbox, body)


def test_without_groups_each_child_has_only_its_own_limit(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: what the tests above would see if the groups did nothing."""
    monkeypatch.setenv("MODHUB_CGROUPS", "off")
    hog = sandbox.runtime(unique("hogs"), memory_mb=128, timeout_ms=30_000)

    async def body(pool: WorkerPool) -> None:
        assert pool.cgroups is None
        answer = await answer_json(pool, hog, HOGS, query={"children": "6", "mb": "40"})
        assert answer["ended"] == [0] * 6

    with_pool(sandbox, body)
