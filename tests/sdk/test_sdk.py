"""The handler contract: the examples' handlers through call_handler and run_job, loading rules,
return values, User.can, and the same answers from a real worker."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from modhub.sandbox import ModuleRuntime, WorkerPool
from modhub.sdk import (
    Events,
    HandlerNotFound,
    JobContext,
    ModuleCalls,
    Request,
    Response,
    Store,
    User,
    call_handler,
    load_handler,
    run_job,
    to_response,
)
from tests.sdk.conftest import EXAMPLES

HELLO = EXAMPLES / "hello"
VMWARE = EXAMPLES / "vmware-vcenter"
CORE_AUTH = EXAMPLES / "core-auth"
READER = User("rita", "operator", frozenset({"hello:read", "vmware:read"}))
DUE = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)


def module(folder: Path, files: dict[str, str]) -> Path:
    """Write a module folder with these files (path -> source) and return it."""
    for name, source in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return folder


def get(path: str, **fields: Any) -> Request:
    """Return a GET request for `path` by READER."""
    return Request("GET", path, user=READER, **fields)


# -- the examples --------------------------------------------------------------------------------


def test_hello_greets_with_the_configured_greeting_and_sees_its_secret() -> None:
    request = get(
        "/greet/Ada",
        path_params={"who": "Ada"},
        config={"greeting": "Bonjour", "apiKey": "s3cret"},
        request_id="req-1",
    )
    response = call_handler(HELLO, "handlers/greet.py", request)
    assert response.status == 200
    assert response.json == {"message": "Bonjour, Ada!", "hasApiKey": True}
    assert response.encoded() == (
        b'{"message":"Bonjour, Ada!","hasApiKey":true}',
        "application/json",
    )


def test_hello_falls_back_to_hello_without_config() -> None:
    response = call_handler(
        str(HELLO), "handlers/greet.py", get("/greet/x", path_params={"who": "x"})
    )
    assert response.json == {"message": "Hello, x!", "hasApiKey": False}


def synced_store() -> Store:
    """Return a store as the sync-inventory job leaves it."""
    store = Store.in_memory()
    context = JobContext(job="sync-inventory", scheduled_time=DUE, store=store)
    assert run_job(VMWARE, "jobs/sync_inventory.py", context) == {"vms": 3, "poweredOn": 2}
    return store


def fake_core_auth(service: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
    """Answer module calls as core-auth's GET /whoami would, for user rita."""
    assert (service, op, args["module"], args["path"]) == (
        "modules",
        "call",
        "core-auth",
        "/whoami",
    )
    body = base64.b64encode(json.dumps({"username": "rita"}).encode()).decode()
    return {"status": 200, "headers": {}, "body": body, "contentType": "application/json"}


@pytest.mark.parametrize(
    ("state", "names"),
    [
        ("poweredOn", ["web-01", "web-02"]),
        ("poweredOff", ["db-01"]),
        (None, ["web-01", "web-02", "db-01"]),
    ],
)
def test_vmware_list_vms_filters_by_power_state(state: str | None, names: list[str]) -> None:
    query = {"powerState": state} if state else {}
    request = get(
        "/vms",
        query=query,
        query_lists={k: [v] for k, v in query.items()},
        config={"vcenterHost": "vc.example.com"},
    )
    request.store = synced_store()
    response = call_handler(VMWARE, "handlers/list_vms.py", request)
    assert response.status == 200
    assert response.json["host"] == "vc.example.com"
    assert [vm["name"] for vm in response.json["items"]] == names
    assert response.json["total"] == len(names)
    assert response.json["syncedAt"] == DUE.isoformat()


def test_vmware_list_vms_before_the_first_sync_hints_at_it() -> None:
    request = get("/vms")
    request.store = Store.in_memory()
    body = call_handler(VMWARE, "handlers/list_vms.py", request).json
    assert (body["items"], body["total"], body["syncedAt"]) == ([], 0, None)
    assert "sync-inventory" in body["hint"]


def test_vmware_create_vm_keeps_the_vm_stamped_by_core_auth() -> None:
    store = synced_store()
    body = json.dumps({"name": "web-03", "cpus": 4}).encode()
    request = Request(
        "POST",
        "/vms",
        body=body,
        headers={"content-type": "application/json"},
        store=store,
        modules=ModuleCalls(fake_core_auth),
        events=(events := Events.in_memory()),
    )
    response = call_handler(VMWARE, "handlers/create_vm.py", request)
    assert response.status == 201
    vm = response.json
    fields = ("id", "name", "cpus", "memoryMb", "createdBy")
    assert events.emitted == [("vm.created", {k: vm[k] for k in fields})]
    assert vm["id"].startswith("vm-")
    assert {k: v for k, v in vm.items() if k != "id"} == {
        "name": "web-03",
        "powerState": "poweredOff",
        "cpus": 4,
        "memoryMb": 1024,
        "createdBy": "rita",
    }
    assert store.get(f"vms/{vm['id']}") == vm
    listed = call_handler(VMWARE, "handlers/list_vms.py", Request("GET", "/vms", store=store))
    assert listed.json["total"] == 4


@pytest.mark.parametrize("body", [b"", b'{"cpus": 2}', b'{"name": ""}'])
def test_vmware_create_vm_refuses_a_vm_without_a_name(body: bytes) -> None:
    response = call_handler(VMWARE, "handlers/create_vm.py", Request("POST", "/vms", body=body))
    assert (response.status, response.json) == (422, {"error": "name is required"})


def test_core_auth_whoami_returns_the_caller() -> None:
    response = call_handler(CORE_AUTH, "handlers/whoami.py", get("/whoami"))
    assert response.json == {
        "username": "rita",
        "role": "operator",
        "permissions": ["hello:read", "vmware:read"],
    }


def test_hello_tick_job_reports_when_it_was_due() -> None:
    context = JobContext(job="tick", scheduled_time=DUE, attempt=2, run_id="7")
    assert run_job(HELLO, "jobs/tick.py", context) == {
        "ranAt": "2026-01-01T06:00:00+00:00",
        "attempt": 2,
    }


def test_vmware_sync_inventory_job_imports_its_sibling_file() -> None:
    assert synced_store().get("vms/vm-201")["name"] == "db-01"


# -- handler shapes ------------------------------------------------------------------------------


ASYNC_SOURCE = """
import asyncio
import threading

LOOPS = []


async def handler(request):
    await asyncio.sleep(0)
    LOOPS.append(id(asyncio.get_running_loop()))
    return {"who": request.path_params["who"], "loops": len(set(LOOPS))}


async def job(context):
    await asyncio.sleep(0)
    return {"job": context.job, "attempt": context.attempt}


def returns_awaitable(request):
    return handler(request)
"""


def test_async_handlers_are_awaited_on_one_loop_as_in_a_worker(tmp_path: Path) -> None:
    folder = module(tmp_path, {"handlers/aio.py": ASYNC_SOURCE})
    request = Request("GET", "/x", path_params={"who": "x"})
    first = call_handler(folder, "handlers/aio.py", request)
    second = call_handler(folder, "handlers/aio.py:returns_awaitable", request)
    assert first.json == {"who": "x", "loops": 1}
    assert second.json == {"who": "x", "loops": 1}  # the same loop: loop-bound state survives


def test_async_handlers_and_jobs_work_from_inside_a_running_loop(tmp_path: Path) -> None:
    folder = module(tmp_path, {"handlers/aio.py": ASYNC_SOURCE})

    async def an_async_test() -> tuple[Response, Any]:
        response = call_handler(
            folder, "handlers/aio.py", Request("GET", "/", path_params={"who": "y"})
        )
        result = run_job(folder, "handlers/aio.py:job", JobContext(job="j", scheduled_time=DUE))
        return response, result

    response, result = asyncio.run(an_async_test())
    assert response.json["who"] == "y"
    assert result == {"job": "j", "attempt": 1}


@pytest.mark.parametrize(
    ("source", "body", "content_type"),
    [
        ("return b'\\x00\\x01raw'", b"\x00\x01raw", "application/octet-stream"),
        ("return bytearray(b'ba')", b"ba", "application/octet-stream"),
        (
            "return Response(body=b'a,b\\n', content_type='text/csv', headers={'X-N': '1'})",
            b"a,b\n",
            "text/csv",
        ),
        ("return Response(status=204)", b"null", "application/json"),
        ("return ['a', 1, None]", b'["a",1,null]', "application/json"),
        ("return None", b"null", "application/json"),
    ],
)
def test_return_values_become_responses(
    tmp_path: Path, source: str, body: bytes, content_type: str
) -> None:
    folder = module(
        tmp_path,
        {"h.py": f"from modhub.sdk import Response\n\ndef handler(request):\n    {source}\n"},
    )
    response = call_handler(folder, "h.py", Request("GET", "/"))
    assert response.encoded() == (body, content_type)


def test_to_response_keeps_a_response_and_stringifies_unknown_json_values() -> None:
    given = Response(status=418)
    assert to_response(given) is given
    stamp = datetime(2026, 5, 4, 3, 2, 1)
    assert to_response({"at": stamp}).encoded()[0] == b'{"at":"2026-05-04 03:02:01"}'


def test_request_json_parses_the_body_or_gives_none() -> None:
    assert Request("POST", "/", body=b'{"a": [1]}').json == {"a": [1]}
    assert Request("POST", "/").json is None
    with pytest.raises(ValueError, match="Expecting value"):
        _ = Request("POST", "/", body=b"not json").json


def test_a_named_function_and_the_default_function(tmp_path: Path) -> None:
    folder = module(
        tmp_path,
        {
            "api/vms.py": (
                "def handler(r):\n    return 'default'\n\ndef other(r):\n    return 'other'\n"
            )
        },
    )
    assert call_handler(folder, "api/vms.py", Request("GET", "/")).json == "default"
    assert call_handler(folder, "api/vms.py:other", Request("GET", "/")).json == "other"


def test_handler_exceptions_propagate_to_the_test(tmp_path: Path) -> None:
    folder = module(tmp_path, {"h.py": "def handler(request):\n    raise KeyError('boom')\n"})
    with pytest.raises(KeyError, match="boom"):
        call_handler(folder, "h.py", Request("GET", "/"))


# -- permissions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("permissions", "asked", "allowed"),
    [
        ({"*"}, "vmware:delete", True),
        ({"*"}, "anything:at-all", True),
        ({"vmware:*"}, "vmware:delete", True),
        ({"vmware:*"}, "vmware:read", True),
        ({"vmware:*"}, "hello:read", False),
        ({"vmware:read"}, "vmware:read", True),
        ({"vmware:read"}, "vmware:write", False),
        ({"vmware:read"}, "vmware:*", False),
        ({"vmware-x:*"}, "vmware:read", False),
        (set(), "hello:read", False),
    ],
)
def test_user_can(permissions: set[str], asked: str, allowed: bool) -> None:
    assert User("u", "role", frozenset(permissions)).can(asked) is allowed


# -- handlers that cannot be found -------------------------------------------------------------


def test_handler_not_found_for_missing_files_functions_and_escapes(tmp_path: Path) -> None:
    folder = module(
        tmp_path / "mod",
        {"h.py": "VALUE = 1\n\ndef handler(r):\n    return 1\n", "data.txt": "x"},
    )
    module(tmp_path, {"outside.py": "def handler(r):\n    return 'escaped'\n"})
    (folder / "link.py").symlink_to(tmp_path / "outside.py")
    request = Request("GET", "/")
    cases = {
        "missing.py": "does not exist",
        "h.py:nope": "has no function 'nope'",
        "h.py:VALUE": "has no function 'VALUE'",
        "data.txt": "does not exist",
        "../outside.py": "does not exist",
        str(tmp_path / "outside.py"): "does not exist",
        "link.py": "does not exist",
        "": "does not exist",
    }
    for ref, message in cases.items():
        with pytest.raises(HandlerNotFound, match=message):
            call_handler(folder, ref, request)
    with pytest.raises(HandlerNotFound):
        run_job(folder, "../outside.py", JobContext(job="j", scheduled_time=DUE))


# -- loading: failures and concurrency ---------------------------------------------------------


def test_a_file_that_failed_to_import_is_imported_again(tmp_path: Path) -> None:
    flag = tmp_path / "ready"
    folder = module(
        tmp_path / "mod",
        {
            "h.py": (
                "from pathlib import Path\n"
                f"if not Path({str(flag)!r}).exists():\n"
                "    raise RuntimeError('not ready')\n"
                "def handler(request):\n    return 'ok'\n"
            )
        },
    )
    with pytest.raises(RuntimeError, match="not ready"):
        call_handler(folder, "h.py", Request("GET", "/"))
    flag.touch()
    assert call_handler(folder, "h.py", Request("GET", "/")).json == "ok"


SLOW_IMPORT = "import time\ntime.sleep(0.2)\n\ndef handler(request):\n    return 'ok'\n"


def test_concurrent_first_calls_wait_for_the_import(tmp_path: Path) -> None:
    folder = module(tmp_path, {"slow.py": SLOW_IMPORT})
    results: list[object] = []

    def call() -> None:
        try:
            results.append(load_handler(folder, "slow.py", {})(Request("GET", "/")))
        except HandlerNotFound as exc:
            results.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["ok"] * 4


# -- the same answers from a real worker -------------------------------------------------------


def user_payload(user: User | None) -> dict[str, Any]:
    """Return the user as the server sends it to a worker."""
    if user is None:
        return {}
    return {"username": user.username, "role": user.role, "permissions": sorted(user.permissions)}


def test_a_worker_answers_as_call_handler_does(tmp_path: Path) -> None:
    """call_handler is a faithful stand-in: the examples answer the same in a worker."""

    def runtime(folder: Path, name: str) -> ModuleRuntime:
        return ModuleRuntime(name=name, version="1.0.0", code=folder, env=Path(sys.prefix))

    slow = module(tmp_path / "slow", {"slow.py": SLOW_IMPORT})
    cases = [
        (
            HELLO,
            "handlers/greet.py",
            get("/greet/Ada", path_params={"who": "Ada"}),
            {"greeting": "Hi"},
        ),
        (CORE_AUTH, "handlers/whoami.py", get("/whoami"), {}),
        (VMWARE, "handlers/create_vm.py", Request("POST", "/vms", body=b'{"cpus": 1}'), {}),
    ]

    async def main() -> None:
        pool = WorkerPool(tmp_path / "data")
        try:
            for folder, ref, request, config in cases:
                request.config = config
                expected = call_handler(folder, ref, request)
                payload = {
                    "method": request.method,
                    "path": request.path,
                    "pathParams": request.path_params,
                    "query": {k: [v] for k, v in request.query.items()},
                    "headers": request.headers,
                    "body": base64.b64encode(request.body).decode(),
                    "user": user_payload(request.user),
                    "requestId": "r",
                }
                answer = await pool.call(
                    runtime(folder, folder.name), "route", ref, payload, config
                )
                assert (answer["status"], answer["body"], answer["contentType"]) == (
                    expected.status,
                    *expected.encoded(),
                )
            job = await pool.call(
                runtime(HELLO, "hello"),
                "job",
                "jobs/tick.py",
                {"job": "tick", "scheduledTime": DUE.isoformat(), "attempt": 3},
                {},
            )
            assert job == {"result": {"ranAt": DUE.isoformat(), "attempt": 3}}
            # A cold worker's concurrent first requests all wait for the handler's import.
            calls = [
                pool.call(
                    runtime(slow, "slow"), "route", "slow.py", {"method": "GET", "path": "/"}, {}
                )
                for _ in range(4)
            ]
            answers = await asyncio.gather(*calls)
            assert [(a["status"], a["body"]) for a in answers] == [(200, b'"ok"')] * 4
        finally:
            await pool.close()

    asyncio.run(main())
