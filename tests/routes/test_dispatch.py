"""The catch-all module route: authentication, permissions, payload, responses, errors."""

from __future__ import annotations

import asyncio
import base64
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from modhub.errors import (
    BadWorkerResponse,
    HandlerFailed,
    HandlerMissing,
    HandlerTimeout,
    ModhubError,
    WorkerUnavailable,
)
from modhub.routes import build_module_routes
from tests.routes.conftest import (
    MAX_BODY,
    Call,
    FakeServices,
    api,
    auth,
    compiled,
    make_app,
    make_runtime,
    manifest,
    route,
    run,
)

VMS = manifest(
    "vmware",
    capabilities=api(
        route("GET", "/vms", "handlers/list.py", permissions=["vmware:read"]),
        route("POST", "/vms", "handlers/create.py", permissions=["vmware:read", "vmware:write"]),
        route("GET", "/vms/:id", "handlers/get.py:get_vm"),
        route("GET", "/vms/active", "handlers/active.py"),
        route("GET", "/", "handlers/root.py"),
    ),
)
M = "/api/v1/m"
PROBLEM = "application/problem+json"


@pytest.fixture(params=[False, True], ids=["thread", "inline"])
def client(request: pytest.FixtureRequest, fake: FakeServices, tmp_path: Path) -> TestClient:
    """Return a client of the tiny app, its lookups in a thread and on the event loop."""
    fake.enable(compiled(tmp_path, VMS), {"host": "vc.example.com", "password": "s3cret"})
    return TestClient(make_app(fake, inline_lookups=request.param))


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert a problem response of `status` carrying the request id; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:modhub:problem:")
    request_id = response.headers["x-request-id"]
    assert body["requestId"] == request_id
    uuid.UUID(request_id)
    return body


def test_route_answers_with_the_handler_response(client: TestClient, fake: FakeServices) -> None:
    response = client.get(f"{M}/vmware/vms", headers=auth())
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert response.headers["content-type"] == "application/json"
    uuid.UUID(response.headers["x-request-id"])
    (call,) = fake.pool.calls
    assert (call.kind, call.handler) == ("route", "handlers/list.py")
    assert call.runtime.name == "vmware"
    assert call.runtime.version == "1.0.0"
    assert call.config == {"host": "vc.example.com", "password": "s3cret"}
    assert call.payload["requestId"] == response.headers["x-request-id"]


def test_payload_carries_the_whole_request(client: TestClient, fake: FakeServices) -> None:
    response = client.post(
        f"{M}/vmware/vms?tag=a&tag=b&limit=5",
        headers={
            **auth(),
            "X-Custom": "yes",
            "Cookie": "session=secret",
            "Connection": "keep-alive",
            "Content-Type": "application/json",
        },
        content=b'{"name": "vm1"}',
    )
    assert response.status_code == 200, response.text
    payload = fake.pool.calls[0].payload
    assert payload["method"] == "POST"
    assert payload["path"] == "/vms"
    assert payload["pathParams"] == {}
    assert payload["query"] == {"tag": ["a", "b"], "limit": ["5"]}
    assert base64.b64decode(payload["body"]) == b'{"name": "vm1"}'
    assert payload["user"] == {"username": "ada", "role": "admin", "permissions": ["*"]}
    headers = payload["headers"]
    assert headers["x-custom"] == "yes"
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == "15"
    # The caller's credentials and hop-by-hop headers never reach module code.
    assert "authorization" not in headers
    assert "cookie" not in headers
    assert "connection" not in headers
    assert set(payload) == {
        "method",
        "path",
        "pathParams",
        "query",
        "headers",
        "body",
        "user",
        "requestId",
    }


def test_path_parameters_are_decoded_per_segment(client: TestClient, fake: FakeServices) -> None:
    assert client.get(f"{M}/vmware/vms/vm%2F42%20x", headers=auth()).status_code == 200
    call = fake.pool.calls[-1]
    assert call.handler == "handlers/get.py:get_vm"
    assert call.payload["pathParams"] == {"id": "vm/42 x"}
    assert client.get(f"{M}/vmware/vms/caf%C3%A9", headers=auth()).status_code == 200
    assert fake.pool.calls[-1].payload["pathParams"] == {"id": "café"}


def test_literal_route_wins(client: TestClient, fake: FakeServices) -> None:
    assert client.get(f"{M}/vmware/vms/active", headers=auth()).status_code == 200
    assert fake.pool.calls[-1].handler == "handlers/active.py"


@pytest.mark.parametrize("path", [f"{M}/vmware", f"{M}/vmware/"])
def test_root_path(client: TestClient, fake: FakeServices, path: str) -> None:
    assert client.get(path, headers=auth()).status_code == 200
    assert fake.pool.calls[-1].handler == "handlers/root.py"
    assert fake.pool.calls[-1].payload["path"] == "/"


def test_user_with_permissions_is_passed(client: TestClient, fake: FakeServices) -> None:
    assert client.get(f"{M}/vmware/vms", headers=auth("reader-token")).status_code == 200
    assert fake.pool.calls[-1].payload["user"] == {
        "username": "rita",
        "role": "reader",
        "permissions": ["vmware:read"],
    }


def test_no_token_is_401(client: TestClient, fake: FakeServices) -> None:
    response = client.get(f"{M}/vmware/vms")
    body = problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Bearer" in body["detail"]
    # Without a token nothing is revealed, not even whether the module exists.
    problem(client.get(f"{M}/nope/x"), 401)
    assert fake.pool.calls == []


def test_missing_permission_is_403_naming_it(client: TestClient, fake: FakeServices) -> None:
    body = problem(client.get(f"{M}/vmware/vms", headers=auth("nobody-token")), 403)
    assert body["permission"] == "vmware:read"
    assert "vmware:read" in body["detail"]
    body = problem(client.post(f"{M}/vmware/vms", headers=auth("reader-token")), 403)
    assert body["permission"] == "vmware:write"
    assert fake.pool.calls == []


def test_unknown_module_and_path_are_404(client: TestClient) -> None:
    body = problem(client.get(f"{M}/nope/vms", headers=auth()), 404)
    assert "nope" in body["detail"]
    body = problem(client.get(f"{M}/vmware/nothing", headers=auth()), 404)
    assert "/nothing" in body["detail"]
    problem(client.get(f"{M}/Not_A_Name/vms", headers=auth()), 404)


def test_disabled_module_is_404_at_once(client: TestClient, fake: FakeServices) -> None:
    assert client.get(f"{M}/vmware/vms", headers=auth()).status_code == 200
    fake.routes.update(lambda table: table.without_module("vmware"))
    problem(client.get(f"{M}/vmware/vms", headers=auth()), 404)


def test_other_method_is_405_with_allow(client: TestClient) -> None:
    response = client.delete(f"{M}/vmware/vms", headers=auth())
    body = problem(response, 405)
    assert response.headers["allow"] == "GET, HEAD, POST"
    assert body["allowed"] == ["GET", "HEAD", "POST"]


def test_a_handler_no_worker_runs_is_501_naming_it(fake: FakeServices, tmp_path: Path) -> None:
    m = manifest("seed", capabilities=api(route("GET", "/hello", "handlers/hello.cjs")))
    fake.enable(build_module_routes(m, make_runtime(tmp_path, m)))
    body = problem(TestClient(make_app(fake)).get(f"{M}/seed/hello", headers=auth()), 501)
    assert "handlers/hello.cjs" in body["detail"]
    assert body["handler"] == "handlers/hello.cjs"
    assert fake.pool.calls == []


def test_a_typescript_handler_goes_to_the_pool(fake: FakeServices, tmp_path: Path) -> None:
    m = manifest("seed", capabilities=api(route("GET", "/hello", "handlers/hello.ts")))
    fake.enable(build_module_routes(m, make_runtime(tmp_path, m)))
    TestClient(make_app(fake)).get(f"{M}/seed/hello", headers=auth())
    assert [call.handler for call in fake.pool.calls] == ["handlers/hello.ts"]


def test_module_without_code_is_501(fake: FakeServices) -> None:
    m = manifest("bare", capabilities=api(route("GET", "/status", "handlers/status.py")))
    fake.enable(build_module_routes(m, None))
    body = problem(TestClient(make_app(fake)).get(f"{M}/bare/status", headers=auth()), 501)
    assert "handlers/status.py" in body["detail"]
    assert "no code" in body["detail"]


def test_permissions_are_checked_before_501(fake: FakeServices) -> None:
    m = manifest(
        "bare", capabilities=api(route("GET", "/s", "handlers/s.py", permissions=["bare:read"]))
    )
    fake.enable(build_module_routes(m, None))
    problem(TestClient(make_app(fake)).get(f"{M}/bare/s", headers=auth("nobody-token")), 403)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (WorkerUnavailable("module 'vmware' worker is restarting"), 503),
        (HandlerTimeout("module 'vmware' did not answer in 30000 ms"), 504),
        (HandlerFailed("module 'vmware' failed to handle the request"), 500),
        (BadWorkerResponse("module 'vmware' sent a malformed response"), 502),
        (HandlerMissing("handler 'handlers/list.py': no function 'handler'"), 501),
    ],
)
def test_pool_errors_become_problems_with_the_request_id(
    client: TestClient, fake: FakeServices, error: ModhubError, status: int
) -> None:
    fake.pool.answer = error
    response = client.get(f"{M}/vmware/vms", headers=auth())
    body = problem(response, status)
    assert body["detail"] == error.detail
    assert fake.pool.calls[-1].payload["requestId"] == body["requestId"]


def test_unexpected_error_is_500_with_request_id(client: TestClient, fake: FakeServices) -> None:
    fake.pool.answer = RuntimeError("pool bug with a secret inside")
    response = client.get(f"{M}/vmware/vms", headers=auth())
    body = problem(response, 500)
    assert "secret" not in response.text
    assert body["detail"] == "an unexpected error occurred; see the server log"


def test_each_request_gets_its_own_id(client: TestClient) -> None:
    ids = {client.get(f"{M}/vmware/vms", headers=auth()).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


def test_response_status_headers_and_content_type(client: TestClient, fake: FakeServices) -> None:
    fake.pool.answer = {
        "status": 201,
        "headers": {
            "Location": "/api/v1/m/vmware/vms/9",
            "X-Module": "yes",
            "Connection": "close",
            "Transfer-Encoding": "chunked",
            "Content-Length": "999",
            "X-Request-Id": "forged",
        },
        "body": b"created",
        "contentType": "text/plain",
    }
    response = client.post(f"{M}/vmware/vms", headers=auth())
    assert response.status_code == 201
    assert response.content == b"created"
    assert response.headers["location"] == "/api/v1/m/vmware/vms/9"
    assert response.headers["x-module"] == "yes"
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["content-length"] == "7"
    assert "transfer-encoding" not in response.headers
    assert response.headers["x-request-id"] != "forged"


def test_binary_body_passes_untouched(client: TestClient, fake: FakeServices) -> None:
    blob = bytes(range(256))
    fake.pool.answer = {
        "status": 200,
        "headers": {},
        "body": blob,
        "contentType": "application/octet-stream",
    }
    response = client.get(f"{M}/vmware/vms", headers=auth())
    assert response.content == blob


def test_no_content_sends_no_body(client: TestClient, fake: FakeServices) -> None:
    fake.pool.answer = {"status": 204, "headers": {}, "body": b"ignored", "contentType": "x/y"}
    response = client.get(f"{M}/vmware/vms", headers=auth())
    assert response.status_code == 204
    assert response.content == b""


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 99, "headers": {}, "body": b"", "contentType": "text/plain"},
        {"status": 700, "headers": {}, "body": b"", "contentType": "text/plain"},
        {"status": "200", "headers": {}, "body": b"", "contentType": "text/plain"},
        {"status": 200, "headers": {}, "body": "text", "contentType": "text/plain"},
        {"status": 200, "headers": {"Bad Name": "x"}, "body": b"", "contentType": "text/plain"},
        {
            "status": 200,
            "headers": {"X-A": "a\r\nSet-Cookie: x"},
            "body": b"",
            "contentType": "t/p",
        },
        {"status": 200, "headers": {"X-A": "☃"}, "body": b"", "contentType": "text/plain"},
        {"status": 200, "headers": {}, "body": b"", "contentType": "text/plain\nX-B: y"},
    ],
)
def test_bad_worker_answers_are_502(
    client: TestClient, fake: FakeServices, answer: dict[str, Any]
) -> None:
    fake.pool.answer = answer
    problem(client.get(f"{M}/vmware/vms", headers=auth()), 502)


def test_body_over_the_limit_is_413(client: TestClient, fake: FakeServices) -> None:
    response = client.post(f"{M}/vmware/vms", headers=auth(), content=b"x" * (MAX_BODY + 1))
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM

    def chunks() -> Any:
        for _ in range(3):
            yield b"x" * (MAX_BODY // 2)

    response = client.post(f"{M}/vmware/vms", headers=auth(), content=chunks())
    assert response.status_code == 413
    assert fake.pool.calls == []


def test_body_at_the_limit_passes(client: TestClient, fake: FakeServices) -> None:
    response = client.post(f"{M}/vmware/vms", headers=auth(), content=b"y" * MAX_BODY)
    assert response.status_code == 200
    assert len(base64.b64decode(fake.pool.calls[-1].payload["body"])) == MAX_BODY


def test_head_uses_the_get_route(client: TestClient, fake: FakeServices) -> None:
    response = client.head(f"{M}/vmware/vms/3", headers=auth())
    assert response.status_code == 200
    assert fake.pool.calls[-1].handler == "handlers/get.py:get_vm"
    assert fake.pool.calls[-1].payload["method"] == "HEAD"


def test_config_is_read_for_every_request(client: TestClient, fake: FakeServices) -> None:
    client.get(f"{M}/vmware/vms", headers=auth())
    fake.module_configs.values["vmware"] = {"host": "new.example.com"}
    client.get(f"{M}/vmware/vms", headers=auth())
    assert [c.config for c in fake.pool.calls] == [
        {"host": "vc.example.com", "password": "s3cret"},
        {"host": "new.example.com"},
    ]


def test_upgrade_does_not_fail_requests_in_flight(fake: FakeServices, tmp_path: Path) -> None:
    """A request that started on 1.0.0 finishes there while new ones go to 2.0.0."""
    fake.enable(compiled(tmp_path, VMS))
    app = make_app(fake)
    started = asyncio.Event()
    release = asyncio.Event()

    async def answer(call: Call) -> dict[str, Any]:
        if call.runtime.version == "1.0.0":
            started.set()
            await release.wait()
        body = call.runtime.version.encode()
        return {"status": 200, "headers": {}, "body": body, "contentType": "text/plain"}

    fake.pool.answer = answer

    async def scenario() -> tuple[str, str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            first = asyncio.create_task(http.get(f"{M}/vmware/vms", headers=auth()))
            await started.wait()
            fake.enable(compiled(tmp_path, manifest("vmware", "2.0.0", capabilities=VMS_CAPS)))
            second = await http.get(f"{M}/vmware/vms", headers=auth())
            release.set()
            return (await first).text, second.text

    assert run(scenario()) == ("1.0.0", "2.0.0")


VMS_CAPS = api(*[r.model_dump(by_alias=True) for r in VMS.capabilities.api.routes])


def test_other_modules_are_unaffected_by_a_failing_one(fake: FakeServices, tmp_path: Path) -> None:
    fake.enable(compiled(tmp_path, VMS))
    fake.enable(compiled(tmp_path, manifest("other", capabilities=api(route("GET", "/p")))))

    async def answer(call: Call) -> dict[str, Any]:
        if call.runtime.name == "vmware":
            raise WorkerUnavailable("module 'vmware' worker is restarting")
        return {"status": 200, "headers": {}, "body": b"fine", "contentType": "text/plain"}

    fake.pool.answer = answer
    client = TestClient(make_app(fake))
    problem(client.get(f"{M}/vmware/vms", headers=auth()), 503)
    assert client.get(f"{M}/other/p", headers=auth()).text == "fine"


def test_a_reused_error_gets_each_request_its_own_id(
    client: TestClient, fake: FakeServices
) -> None:
    error = WorkerUnavailable("module 'vmware' is restarting (backoff)")
    fake.pool.answer = error
    first = problem(client.get(f"{M}/vmware/vms", headers=auth()), 503)
    second = problem(client.get(f"{M}/vmware/vms", headers=auth()), 503)
    assert first["requestId"] != second["requestId"]
    assert "requestId" not in error.extra
