"""The Node worker through the real pool: answers, the handler contract, module services,
jobs, a module mixing languages, and hostile handlers contained while another module keeps
answering. Workers run in whichever isolation this machine gives (bubblewrap when
installed); the attacks are in modules/hostile/handlers/attacks.ts."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from modhub.errors import (
    BadWorkerResponse,
    HandlerFailed,
    HandlerMissing,
    HandlerTimeout,
    WorkerUnavailable,
)
from modhub.sandbox import ModuleRuntime, PoolLimits, WorkerPool
from modhub.sandbox.channel import CallerContext
from modhub.sandbox.launch import module_uid
from tests.sandbox.conftest import (
    Sandbox,
    alive,
    answer_json,
    eventually,
    fork_bomb_contained,
    processes_of,
    route,
    unique,
    uses_bubblewrap,
    wait_until,
    with_pool,
)
from tests.typescript.conftest import ATTACKS, node_runtime, requires_node

pytestmark = requires_node
OK = f"{ATTACKS}:ok"


async def recovered(pool: WorkerPool, runtime: ModuleRuntime) -> Any:
    """Wait out the backoff; return the first good answer of the restarted worker."""
    return await eventually(
        lambda: answer_json(pool, runtime, OK), 15, f"{runtime.key} to answer again"
    )


async def bystander_keeps_answering(
    pool: WorkerPool, bystander: ModuleRuntime, attack: asyncio.Task[Any]
) -> int:
    """Call the bystander's TypeScript route while `attack` runs; return how many answered."""
    served = 0
    while not attack.done():
        assert (await answer_json(pool, bystander, OK))["ok"] is True
        served += 1
        await asyncio.sleep(0.02)
    assert (await answer_json(pool, bystander, OK))["ok"] is True
    return served + 1


# -- the contract ----------------------------------------------------------------------------


def test_route_gets_the_request_and_chooses_status_headers_and_body(
    node_sandbox: Sandbox,
) -> None:
    runtime = node_runtime(node_sandbox, unique("ts-answers"))

    async def body(pool: WorkerPool) -> None:
        answer = await route(
            pool,
            runtime,
            f"{ATTACKS}:echo",
            method="POST",
            path="/vms/42",
            params={"id": "42"},
            query={"q": "x"},
            body={"name": "web"},
            config={"greeting": "hi"},
        )
        assert answer["status"] == 201
        assert answer["headers"] == {"X-Echo": "yes"}
        assert answer["contentType"] == "application/json"
        echoed = json.loads(answer["body"])
        assert echoed["method"] == "POST"
        assert echoed["path"] == "/vms/42"
        assert echoed["params"] == {"id": "42"}
        assert echoed["query"] == {"q": "x"}
        assert echoed["body"] == {"name": "web"}
        assert echoed["config"] == {"greeting": "hi"}
        assert echoed["user"] == "ada"
        assert echoed["canRead"] is True
        assert echoed["requestId"]
        text = await route(pool, runtime, f"{ATTACKS}:text")
        assert (text["status"], text["body"], text["contentType"]) == (
            200,
            b"plain words",
            "text/plain",
        )
        # A plain value is JSON 200; the module's own imports (lib/shared.ts) were bundled.
        assert await answer_json(pool, runtime, ATTACKS) == {
            "ok": True,
            "language": "typescript",
            "shared": "from lib/shared.ts",
        }
        assert await answer_json(pool, runtime, f"{ATTACKS}:default") == {"default": True}
        # The call's request id labels its log lines, as in the Python worker.
        rid = echoed["requestId"]
        assert f"INFO module [request {rid}]: echo called by ada" in pool.logs[runtime.name]

    with_pool(node_sandbox, body)


def test_errors_missing_functions_and_raw_output(node_sandbox: Sandbox) -> None:
    runtime = node_runtime(node_sandbox, unique("ts-errors"))

    async def body(pool: WorkerPool) -> None:
        with pytest.raises(HandlerFailed):
            await route(pool, runtime, f"{ATTACKS}:fails")
        with pytest.raises(HandlerMissing, match="does not export a function 'nope'"):
            await route(pool, runtime, f"{ATTACKS}:nope")
        with pytest.raises(HandlerMissing, match="was not compiled"):
            await route(pool, runtime, "handlers/absent.ts")
        with pytest.raises(HandlerMissing, match="was not compiled"):
            await route(pool, runtime, "../../../etc/passwd.js")
        # Raw writes to fd 1 go to the module log, never into the protocol.
        for _ in range(2):
            assert await answer_json(pool, runtime, f"{ATTACKS}:noisy") == {"quiet": False}
        assert (await answer_json(pool, runtime, OK))["ok"] is True
        logged = "\n".join(pool.logs[runtime.name])
        assert "TypeError: the handler broke" in logged
        assert "attacks.ts:" in logged  # the stack names the TypeScript source (source maps)
        await wait_until(
            lambda: "raw bytes on file descriptor 1" in pool.logs[runtime.name], 5, "raw output"
        )
        assert pool.stats()["failures"] == {}

    with_pool(node_sandbox, body)


class MemoryStore:
    """The store service, on a dict per module (the real one has its own tests)."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    async def handle(self, context: CallerContext, op: str, args: dict[str, Any]) -> Any:
        data = self.data.setdefault(context.module, {})
        key = args["key"]
        if op == "get_entry":
            return data.get(key)
        entry = data.get(key, {"key": key, "value": 0, "version": 0})
        value = entry["value"] + args["by"] if op == "incr" else args["value"]
        data[key] = {"key": key, "value": value, "version": entry["version"] + 1}
        return value if op == "incr" else data[key]["version"]


def test_store_events_and_jobs_go_over_the_channel(node_sandbox: Sandbox) -> None:
    runtime = node_runtime(node_sandbox, unique("ts-store"))
    store = MemoryStore()

    async def body(pool: WorkerPool) -> None:
        pool.services["store"] = store.handle
        first = await answer_json(pool, runtime, f"{ATTACKS}:counter")
        second = await answer_json(pool, runtime, f"{ATTACKS}:counter")
        assert (first["count"], second["count"]) == (1, 2)
        assert second["last"] == {"by": "ada"}
        scheduled = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)
        result = await pool.call(
            runtime,
            "job",
            "jobs/sync.mjs",
            {"job": "sync", "scheduledTime": scheduled.isoformat(), "attempt": 2, "runId": "r1"},
            {},
        )
        assert result == {"result": {"job": "sync", "attempt": 2, "version": 1, "runId": "r1"}}
        assert store.data[runtime.name]["synced"]["value"] == {"at": "2026-12-05T06:00:00.000Z"}
        emitted: list[dict[str, Any]] = []

        async def events(context: CallerContext, op: str, args: dict[str, Any]) -> Any:
            emitted.append({"module": context.module, "op": op, **args})
            return {"id": 7, "seq": 1}

        pool.services["events"] = events
        event = {
            "id": 3,
            "name": "vm.created",
            "source": "other",
            "payload": {"vm": "vm-1"},
            "emittedAt": scheduled.isoformat(),
            "attempt": 1,
        }
        answer = await pool.call(runtime, "event", f"{ATTACKS}:onEvent", event, {})
        assert answer["result"] == {
            "name": "vm.created",
            "source": "other",
            "payload": {"vm": "vm-1"},
            "attempt": 1,
            "emitted": {"id": 7, "seq": 1},
        }
        assert emitted == [
            {
                "module": runtime.name,
                "op": "emit",
                "name": "vm.seen",
                "payload": {"from": "vm.created"},
            }
        ]

    with_pool(node_sandbox, body)


def test_a_module_mixing_languages_has_one_worker_per_language(node_sandbox: Sandbox) -> None:
    runtime = node_runtime(node_sandbox, unique("ts-mixed"))

    async def body(pool: WorkerPool) -> None:
        python = await answer_json(pool, runtime, "handlers/py_side.py")
        node = await answer_json(pool, runtime, OK)
        assert python["language"] == "python"
        assert node == {"ok": True}
        assert set(pool.workers) == {runtime.key, f"{runtime.key}#node"}
        await pool.stop_module(runtime.name)
        assert pool.workers == {}

    with_pool(node_sandbox, body)


# -- hostile handlers --------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ["memoryBomb", "bufferBomb"])
def test_memory_bomb_is_contained(node_sandbox: Sandbox, attack: str) -> None:
    hog = node_runtime(node_sandbox, unique("ts-hog"), memory_mb=128, timeout_ms=20_000)
    bystander = node_runtime(node_sandbox, unique("ts-bystander"))

    async def body(pool: WorkerPool) -> None:
        await answer_json(pool, bystander, OK)
        task = asyncio.create_task(route(pool, hog, f"{ATTACKS}:{attack}"))
        assert await bystander_keeps_answering(pool, bystander, task) > 0
        with pytest.raises((HandlerFailed, WorkerUnavailable)):
            await task
        assert hog.key + "#node" not in pool.workers
        assert (await recovered(pool, hog))["ok"] is True

    with_pool(node_sandbox, body)


def test_endless_loop_times_out_and_the_worker_is_killed(node_sandbox: Sandbox) -> None:
    spinner = node_runtime(node_sandbox, unique("ts-spinner"), timeout_ms=1500)
    bystander = node_runtime(node_sandbox, unique("ts-bystander"))

    async def body(pool: WorkerPool) -> None:
        await answer_json(pool, spinner, OK)
        old = pool.workers[f"{spinner.key}#node"].process.pid
        task = asyncio.create_task(route(pool, spinner, f"{ATTACKS}:endless"))
        assert await bystander_keeps_answering(pool, bystander, task) > 0
        with pytest.raises(HandlerTimeout):
            await task
        assert not alive(old)
        if fork_bomb_contained():
            assert processes_of(module_uid(spinner.name)) == []
        assert (await recovered(pool, spinner))["ok"] is True

    with_pool(node_sandbox, body)


def test_process_exit_fails_only_its_request(node_sandbox: Sandbox) -> None:
    quitter = node_runtime(node_sandbox, unique("ts-quitter"))
    bystander = node_runtime(node_sandbox, unique("ts-bystander"))

    async def body(pool: WorkerPool) -> None:
        await answer_json(pool, bystander, OK)
        task = asyncio.create_task(route(pool, quitter, f"{ATTACKS}:exit"))
        assert await bystander_keeps_answering(pool, bystander, task) > 0
        with pytest.raises(WorkerUnavailable, match="worker stopped"):
            await task
        assert "exit code 3" in "\n".join(pool.logs[quitter.name])
        assert (await recovered(pool, quitter))["ok"] is True

    with_pool(node_sandbox, body)


def test_fork_bomb_is_contained(node_sandbox: Sandbox) -> None:
    if not fork_bomb_contained():
        pytest.skip("RLIMIT_NPROC bounds a fork bomb only for the module's own uid")
    bomber = node_runtime(node_sandbox, unique("ts-bomber"), timeout_ms=5000)
    bystander = node_runtime(node_sandbox, unique("ts-bystander"))
    uid = module_uid(bomber.name)

    async def body(pool: WorkerPool) -> None:
        await answer_json(pool, bystander, OK)
        task = asyncio.create_task(route(pool, bomber, f"{ATTACKS}:forkBomb"))
        most = 0
        while not task.done():  # the bystander answers while the bomb goes off
            most = max(most, len(processes_of(uid)))
            assert (await answer_json(pool, bystander, OK))["ok"] is True
        assert (await answer_json(pool, bystander, OK))["ok"] is True
        try:
            answer = json.loads((await task)["body"])
            assert answer["spawned"] < 64
            assert "EAGAIN" in answer["refused"]
        except (HandlerFailed, HandlerTimeout, WorkerUnavailable):
            pass  # or the worker died of it: contained either way
        assert most <= 64  # RLIMIT_NPROC and the control group's pids.max
        await pool.stop_module(bomber.name)
        await wait_until(lambda: not processes_of(uid), 5, f"no process of uid {uid}")

    with_pool(node_sandbox, body)


def test_the_data_dir_and_secrets_are_out_of_sight(node_sandbox: Sandbox) -> None:
    if not uses_bubblewrap():
        pytest.skip("only bubblewrap hides the data dir (rlimits keep the host's view)")
    runtime = node_runtime(node_sandbox, unique("ts-snoop"))
    bystander = node_runtime(node_sandbox, unique("ts-bystander"))
    secret = node_sandbox.data_dir / "secret.key"
    secret.write_text("do not read")
    (node_sandbox.data_dir / "modhub.db").write_text("database")

    async def body(pool: WorkerPool) -> None:
        for path in (secret, node_sandbox.data_dir / "modhub.db"):
            read = await answer_json(
                pool, runtime, f"{ATTACKS}:readPath", query={"path": str(path)}
            )
            assert read == {"refused": "ENOENT"}
        listed = await answer_json(
            pool, runtime, f"{ATTACKS}:listDir", query={"path": str(node_sandbox.data_dir)}
        )
        # Only the paths down to its own code and the worker script are there.
        assert set(listed["entries"]) <= {"modules", "runtime", "envs"}
        who = await answer_json(pool, runtime, f"{ATTACKS}:whoami")
        assert who["uid"] != 0
        assert who["shell"] == str(who["uid"])
        network = await answer_json(pool, runtime, f"{ATTACKS}:network")
        assert "refused" in network  # no network unless the manifest allows it
        assert (await answer_json(pool, bystander, OK))["ok"] is True

    with_pool(node_sandbox, body)


def test_huge_response_is_refused(node_sandbox: Sandbox) -> None:
    runtime = node_runtime(node_sandbox, unique("ts-bigmouth"), memory_mb=512)
    bystander = node_runtime(node_sandbox, unique("ts-bystander"))

    async def body(pool: WorkerPool) -> None:
        task = asyncio.create_task(route(pool, runtime, f"{ATTACKS}:huge"))
        assert await bystander_keeps_answering(pool, bystander, task) > 0
        with pytest.raises((BadWorkerResponse, WorkerUnavailable)) as caught:
            await task
        assert "over the" in str(caught.value)
        assert (await recovered(pool, runtime))["ok"] is True

    with_pool(node_sandbox, body, PoolLimits(backoff_base=0.3, max_response_bytes=16 << 20))
