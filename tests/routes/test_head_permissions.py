"""Every method of a module route checks the route's permissions: HEAD (answered by the
GET route) and OPTIONS too, for a caller lacking them, not only for an admin."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.routes.conftest import FakeServices, api, auth, compiled, make_app, manifest, route

M = "/api/v1/m"
GUARDED = manifest(
    "vmware",
    capabilities=api(
        *(
            route(method, "/vms", f"handlers/{method.lower()}.py", permissions=["vmware:write"])
            for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
        ),
        route("GET", "/vms/:id", "handlers/one.py", permissions=["vmware:read"]),
    ),
)


@pytest.fixture(params=[False, True], ids=["thread", "inline"])
def client(request: pytest.FixtureRequest, fake: FakeServices, tmp_path: Path) -> TestClient:
    fake.enable(compiled(tmp_path, GUARDED))
    return TestClient(make_app(fake, inline_lookups=request.param))


@pytest.mark.parametrize("token", ["reader-token", "nobody-token"])
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_a_caller_without_the_permission_is_refused_for_every_method(
    client: TestClient, fake: FakeServices, method: str, token: str
) -> None:
    response = client.request(method, f"{M}/vmware/vms", headers=auth(token))

    assert response.status_code == 403
    assert fake.pool.calls == []  # no handler ran


def test_head_without_the_permission_is_refused_and_with_it_served(
    client: TestClient, fake: FakeServices
) -> None:
    assert client.head(f"{M}/vmware/vms/7", headers=auth("nobody-token")).status_code == 403
    assert client.head(f"{M}/vmware/vms", headers=auth("reader-token")).status_code == 403
    assert fake.pool.calls == []

    assert client.head(f"{M}/vmware/vms/7", headers=auth("reader-token")).status_code == 200
    assert [c.handler for c in fake.pool.calls] == ["handlers/one.py"]


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_head_and_every_method_need_a_token(
    client: TestClient, fake: FakeServices, method: str
) -> None:
    assert client.request(method, f"{M}/vmware/vms").status_code == 401
    assert fake.pool.calls == []
