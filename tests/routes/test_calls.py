"""Module-to-module calls, server side (`ModuleCalls`), on SQLite and PostgreSQL: every
refusal, the users' and jobs' permissions, depth, the time left, what the callee gets, and
one call made by a real handler through its worker's channel. Callees run in real workers.
(Calls through a whole server are in tests/e2e/test_module_services.py.)"""

from __future__ import annotations

import asyncio
import base64
import json
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from modhub.errors import CallRefused
from modhub.manifest import Manifest
from modhub.registry import Registry
from modhub.routes import RouteTable, RouteTableHolder, build_module_routes
from modhub.routes.calls import CALLER_HEADER, DEPTH_HEADER, ModuleCalls
from modhub.sandbox import ModuleRuntime, PoolLimits, WorkerPool
from modhub.sandbox.channel import MAX_CALL_DEPTH, CallerContext
from modhub.services import Services
from tests.routes.conftest import FakeConfigs
from tests.sandbox.conftest import module_env, payload

__all__ = ["module_env"]  # the session's module environment, a fixture
T = TypeVar("T")

CALLEE_CODE = """
    from modhub.sdk import Response

    def echo(request):
        return {
            "method": request.method,
            "path": request.path,
            "params": request.path_params,
            "query": request.query_lists,
            "headers": request.headers,
            "json": request.json if request.body else None,
            "user": request.user.username,
            "permissions": sorted(request.user.permissions),
        }

    def broken(request):
        return Response(status=999)

    def fails(request):
        raise RuntimeError("the callee's own bug")
"""
CALLER_CODE = """
    from modhub.sdk import CallRefused

    def relay(request):
        try:
            answer = request.modules.call(
                request.query["module"],
                "POST",
                "/echo/42?from=path",
                json={"vm": "web-01"},
                query={"n": [1, 2]},
                headers={"Authorization": "Bearer stolen", "Cookie": "s=1",
                         "X-Modhub-Caller": "somebody-else", "X-Trace": "t-1"},
            )
        except CallRefused as refused:
            return {"refused": str(refused)}
        return {"status": answer.status, "json": answer.json}
"""
ROUTES = [
    {"method": "POST", "path": "/echo/{id}", "handler": "handlers/main.py:echo"},
    {"method": "GET", "path": "/echo", "handler": "handlers/main.py:echo"},
    {
        "method": "GET",
        "path": "/guarded",
        "handler": "handlers/main.py:echo",
        "permissions": ["callee:read"],
    },
    {"method": "GET", "path": "/broken", "handler": "handlers/main.py:broken"},
    {"method": "GET", "path": "/fails", "handler": "handlers/main.py:fails"},
    {"method": "GET", "path": "/unwritten", "handler": "handlers/missing.py:nothing"},
]
CALLEE: dict[str, Any] = {
    "name": "callee",
    "version": "1.2.0",
    "displayName": "Callee",
    "permissions": ["callee:read"],
    "capabilities": {"api": {"routes": ROUTES}},
}
CALLER: dict[str, Any] = {
    "name": "caller",
    "version": "1.0.0",
    "displayName": "Caller",
    "permissions": ["caller:sync"],
    "dependencies": {"modules": {"callee": "^1.0.0", "idle": "*", "ghost": "*"}},
    "capabilities": {
        "api": {
            "routes": [{"method": "GET", "path": "/relay", "handler": "handlers/main.py:relay"}]
        }
    },
}
IDLE: dict[str, Any] = {"name": "idle", "version": "1.0.0", "displayName": "Idle"}
ADA = {"username": "ada", "role": "admin", "permissions": ["*"]}
RITA = {"username": "rita", "role": "viewer", "permissions": ["modules:read"]}


class RecordingPool(WorkerPool):
    """A real worker pool that also records what each call was given."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, PoolLimits(backoff_base=0.3))
        self.given: list[tuple[int | None, CallerContext | None, dict[str, Any]]] = []

    async def call(
        self,
        runtime: ModuleRuntime,
        kind: str,
        handler: str,
        payload: dict[str, Any],
        config: dict[str, Any],
        timeout_ms: int | None = None,
        context: CallerContext | None = None,
    ) -> dict[str, Any]:
        """Record the call, then run it in the module's worker."""
        self.given.append((timeout_ms, context, payload))
        return await super().call(runtime, kind, handler, payload, config, timeout_ms, context)


@dataclass
class World:
    """The registry (SQLite or PostgreSQL), a route table serving caller and callee, their
    code on disk, and what makes a pool and the modules service on it."""

    registry: Registry
    holder: RouteTableHolder
    runtimes: dict[str, ModuleRuntime]
    data_dir: Path

    def serve(self, data: dict[str, Any], timeout_ms: int = 3000) -> None:
        """Put a manifest (at any version) in the route table, with the callee's code."""
        m = Manifest.model_validate(data)
        runtime = self.runtimes["callee"]
        runtime = ModuleRuntime(
            name=m.name,
            version=m.version,
            code=runtime.code,
            env=runtime.env,
            timeout_ms=timeout_ms,
        )
        self.holder.update(lambda t: t.with_module(build_module_routes(m, runtime)))

    def run(self, body: Callable[[RecordingPool, ModuleCalls], Awaitable[T]]) -> T:
        """Run `body(pool, calls)` on a new event loop; stop every worker after."""

        async def main() -> T:
            pool = RecordingPool(self.data_dir)
            calls = ModuleCalls(self.registry, self.holder, pool, FakeConfigs({"callee": {}}))
            pool.services["modules"] = calls.handle
            try:
                return await body(pool, calls)
            finally:
                await pool.close()

        return asyncio.run(main())


def code(folder: Path, source: str) -> Path:
    (folder / "handlers").mkdir(parents=True)
    (folder / "handlers" / "main.py").write_text(textwrap.dedent(source))
    return folder


@pytest.fixture
def world(services: Services, tmp_path: Path, module_env: Path) -> World:
    registry = services.registry
    for data in (CALLEE, IDLE, CALLER):
        registry.register(data, actor="test")
    data_dir = tmp_path / "data"
    runtimes = {
        name: ModuleRuntime(
            name=name,
            version=version,
            code=code(data_dir / "modules" / name / version, source),
            env=module_env,
            timeout_ms=3000,
        )
        for name, version, source in (
            ("callee", "1.2.0", CALLEE_CODE),
            ("caller", "1.0.0", CALLER_CODE),
        )
    }
    holder = RouteTableHolder(
        RouteTable(
            build_module_routes(Manifest.model_validate(data), runtimes[data["name"]])
            for data in (CALLEE, CALLER)
        )
    )
    return World(registry, holder, runtimes, data_dir)


def context(**fields: Any) -> CallerContext:
    """Return the context of a request of `caller` by ada, 30 s from its deadline."""
    values: dict[str, Any] = {
        "module": "caller",
        "version": "1.0.0",
        "user": ADA,
        "job": None,
        "deadline": time.monotonic() + 30,
        **fields,
    }
    return CallerContext(**values)


def call_args(target: str = "callee", method: str = "GET", path: str = "/echo", **more: Any) -> Any:
    return {"module": target, "method": method, "path": path, **more}


def refusal(world: World, args: dict[str, Any], **fields: Any) -> str:
    """Return why the call is refused (failing if it is not), and check no worker ran."""

    async def body(pool: RecordingPool, calls: ModuleCalls) -> str:
        with pytest.raises(CallRefused) as refused:
            await calls.handle(context(**fields), "call", args)
        assert pool.given == []
        assert pool.workers == {}
        return refused.value.detail

    return world.run(body)


def answer(world: World, args: dict[str, Any], **fields: Any) -> tuple[dict[str, Any], Any]:
    """Return the answer of an accepted call (body parsed) and what the pool was given."""

    async def body(pool: RecordingPool, calls: ModuleCalls) -> tuple[dict[str, Any], Any]:
        result = await calls.handle(context(**fields), "call", args)
        return result, pool.given[-1]

    result, given = world.run(body)
    result["body"] = json.loads(base64.b64decode(result["body"]))
    return result, given


# -- refusals --------------------------------------------------------------------------------


def test_a_module_not_declared_in_dependencies_is_refused(world: World) -> None:
    world.serve({**IDLE, "name": "stranger"})
    detail = refusal(world, call_args("stranger"))
    assert detail == "'caller' does not list 'stranger' in dependencies.modules"


def test_a_declared_module_that_is_not_enabled_is_refused_with_its_status(world: World) -> None:
    assert refusal(world, call_args("idle")) == "'idle' is not enabled (REGISTERED)"
    assert refusal(world, call_args("ghost")) == "'ghost' is not enabled (not installed)"


def test_a_version_outside_the_declared_range_is_refused(world: World) -> None:
    world.serve({**CALLEE, "version": "2.0.0"})
    detail = refusal(world, call_args())
    assert detail == "'callee' is at version 2.0.0, outside the declared range ^1.0.0"


def test_a_route_the_callee_does_not_have_is_refused(world: World) -> None:
    assert refusal(world, call_args(path="/nope")) == "'callee' has no route GET /nope"
    assert "allowed: GET, HEAD" in refusal(world, call_args(method="DELETE"))
    assert "missing.py" in refusal(world, call_args(path="/unwritten"))


def test_a_chain_deeper_than_eight_calls_is_refused(world: World) -> None:
    detail = refusal(world, call_args(), depth=MAX_CALL_DEPTH)  # this would be call 9
    assert f"deeper than {MAX_CALL_DEPTH} calls" in detail
    assert "call 9" in detail
    result, (_, inner, _) = answer(world, call_args(), depth=MAX_CALL_DEPTH - 1)
    assert result["status"] == 200
    assert result["body"]["headers"][DEPTH_HEADER] == str(MAX_CALL_DEPTH)
    assert inner.depth == MAX_CALL_DEPTH


def test_a_call_with_no_time_left_is_refused(world: World) -> None:
    detail = refusal(world, call_args(), deadline=time.monotonic() - 0.001)
    assert detail == "no time is left of the request or job that makes the call"


def test_a_user_without_the_callees_permission_is_refused(world: World) -> None:
    detail = refusal(world, call_args(path="/guarded"), user=RITA)
    assert detail == (
        "rita lacks the permission 'callee:read' that GET /guarded of 'callee' requires"
    )
    scoped = {**RITA, "permissions": ["callee:*"]}  # the dispatcher's rule: scope:* holds it
    assert answer(world, call_args(path="/guarded"), user=scoped)[0]["status"] == 200


@pytest.mark.parametrize(
    ("args", "field_name"),
    [
        ({"module": None, "method": "GET", "path": "/echo"}, "'module'"),
        (call_args(method="BREW"), "'method'"),
        (call_args(path="echo"), "'path'"),
        (call_args(path="/echo\nmodhub: worker stopped"), "'path'"),
        (call_args(query=["a"]), "'query'"),
        (call_args(query={"a": {"b": 1}}), "query parameter 'a'"),
        (call_args(headers={"x-a": "1\r\nx-b: 2"}), "header 'x-a'"),
        (call_args(headers="x"), "'headers'"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(
    world: World, args: dict[str, Any], field_name: str
) -> None:
    assert field_name in refusal(world, args)


def test_an_unknown_operation_is_refused(world: World) -> None:
    async def body(pool: RecordingPool, calls: ModuleCalls) -> str:
        with pytest.raises(CallRefused) as refused:
            await calls.handle(context(), "list", {})
        return refused.value.detail

    assert world.run(body) == "the modules service has no operation 'list'"


# -- accepted calls --------------------------------------------------------------------------


def test_the_callee_gets_the_request_with_the_caller_named_and_logs_it(world: World) -> None:
    args = call_args(
        method="post",
        path="/echo/a%2Fb?x=1&x=2",
        json={"vm": "web-01"},
        query={"x": "3", "n": [4, 5]},
        headers={"Authorization": "Bearer t", "Cookie": "c=1", "Connection": "close"}
        | {"X-Modhub-Caller": "forged", "X-Modhub-Call-Depth": "0", "X-Trace": "t-1"},
    )

    async def body(pool: RecordingPool, calls: ModuleCalls) -> tuple[Any, list[str], str]:
        result = await calls.handle(context(user=RITA), "call", args)
        return result, list(pool.logs["callee"]), pool.given[-1][2]["requestId"]

    result, logs, request_id = world.run(body)
    assert (result["status"], result["contentType"]) == (200, "application/json")
    got = json.loads(base64.b64decode(result["body"]))
    assert (got["method"], got["path"], got["params"]) == ("POST", "/echo/a/b", {"id": "a/b"})
    assert got["query"] == {"x": ["1", "2", "3"], "n": ["4", "5"]}
    assert got["json"] == {"vm": "web-01"}
    assert got["user"] == "rita"
    assert got["permissions"] == ["modules:read"]
    headers = got["headers"]
    assert headers[CALLER_HEADER] == "caller"
    assert headers[DEPTH_HEADER] == "1"
    assert headers["x-trace"] == "t-1"
    assert headers["content-type"] == "application/json"
    assert not {"authorization", "cookie", "connection"} & set(headers)
    assert [line for line in logs if "called by" in line] == [
        f"modhub: called by caller (POST /echo/a/b, call depth 1, request {request_id})"
    ]


def test_a_job_acts_as_its_module_with_only_its_declared_permissions(world: World) -> None:
    detail = refusal(world, call_args(path="/guarded"), user=None, job="sync")
    assert detail.startswith("module:caller lacks the permission 'callee:read'")
    result, (_, inner, given) = answer(world, call_args(), user=None, job="sync")
    assert (result["body"]["user"], result["body"]["permissions"]) == (
        "module:caller",
        ["caller:sync"],
    )
    # Deeper calls keep acting as the module: the callee's context carries that user.
    assert (
        inner.user
        == given["user"]
        == {
            "username": "module:caller",
            "role": "module",
            "permissions": ["caller:sync"],
        }
    )
    assert (inner.module, inner.version, inner.job) == ("callee", "1.2.0", "sync")
    # Neither a user nor a job: nobody to act for.
    assert "needs the user of a request or a job" in refusal(world, call_args(), user=None)


def test_a_call_gets_only_the_time_its_request_has_left(world: World) -> None:
    world.serve(CALLEE, timeout_ms=60_000)
    started = time.monotonic()
    deadline = started + 20
    _, (timeout_ms, inner, _) = answer(world, call_args(), deadline=deadline)
    assert 0 < timeout_ms <= 20_000  # not the callee's own 60 s
    assert started < inner.deadline <= deadline
    _, (timeout_ms, inner, _) = answer(world, call_args(), deadline=started + 600)
    assert timeout_ms == 60_000  # and never more than the callee's own timeout
    assert inner.deadline < started + 600


def test_a_callees_bad_answer_or_failure_is_a_problem_answer(world: World) -> None:
    bad, _ = answer(world, call_args(path="/broken"))
    assert (bad["status"], bad["contentType"]) == (502, "application/problem+json")
    assert "invalid status 999" in bad["body"]["detail"]
    failed, (_, _, given) = answer(world, call_args(path="/fails"))
    assert failed["status"] == 500
    assert failed["body"]["requestId"] == given["requestId"]
    assert "the callee's own bug" not in json.dumps(failed["body"])


# -- through a real handler ------------------------------------------------------------------


def test_a_handler_calls_a_module_through_its_channel(world: World) -> None:
    def relay(pool: RecordingPool, target: str) -> Awaitable[dict[str, Any]]:
        request = payload(query={"module": target})
        request["user"] = RITA
        handler = "handlers/main.py:relay"
        return pool.call(world.runtimes["caller"], "route", handler, request, {})

    async def body(pool: RecordingPool, calls: ModuleCalls) -> list[Any]:
        answers = [await relay(pool, "callee"), await relay(pool, "stranger")]
        return [json.loads(a["body"]) for a in answers]

    through, refused = world.run(body)
    assert through["status"] == 200
    got = through["json"]
    assert (got["path"], got["params"], got["user"]) == ("/echo/42", {"id": "42"}, "rita")
    assert got["query"] == {"from": ["path"], "n": ["1", "2"]}
    assert got["json"] == {"vm": "web-01"}
    assert got["headers"][CALLER_HEADER] == "caller"
    assert got["headers"]["x-trace"] == "t-1"
    assert not {"authorization", "cookie"} & set(got["headers"])
    assert refused == {"refused": "'caller' does not list 'stranger' in dependencies.modules"}
