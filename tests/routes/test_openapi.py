"""Module routes in the OpenAPI document, following the route table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from modhub.routes import install_openapi, module_tag, with_module_routes
from tests.routes.conftest import FakeServices, api, compiled, make_app, manifest, route

VMS = manifest(
    "vmware",
    description="Manage vCenter",
    capabilities=api(
        route("GET", "/vms", "handlers/list.py", permissions=["vmware:read"]),
        route("POST", "/vms", "handlers/create.py", description="Create a VM"),
        route("GET", "/vms/:id/disks/{disk}", "handlers/disk.py"),
        route("GET", "/", "handlers/root.cjs"),
    ),
)


def document(fake: FakeServices) -> tuple[TestClient, Any]:
    app = make_app(fake)
    install_openapi(app, lambda: fake.routes.table)
    client = TestClient(app)
    return client, client.get("/openapi.json").json()


def test_enabled_module_routes_appear_under_their_tag(fake: FakeServices, tmp_path: Path) -> None:
    fake.enable(compiled(tmp_path, VMS))
    _, doc = document(fake)
    tag = module_tag("vmware")
    assert tag == "module:vmware"
    assert {"name": tag, "description": "Vmware module 1.0.0: Manage vCenter"} in doc["tags"]
    paths = doc["paths"]
    listing = paths["/api/v1/m/vmware/vms"]["get"]
    assert listing["tags"] == [tag]
    assert listing["security"] == [{"HTTPBearer": []}]
    assert listing["summary"] == "GET /vms → handlers/list.py"
    assert "vmware:read" in listing["description"]
    assert listing["x-modhub-permissions"] == ["vmware:read"]
    assert "403" in listing["responses"]
    assert "503" in listing["responses"]
    problem_ref = listing["responses"]["404"]["content"]["application/problem+json"]["schema"]
    assert problem_ref == {"$ref": "#/components/schemas/Problem"}
    assert "Problem" in doc["components"]["schemas"]
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    create = paths["/api/v1/m/vmware/vms"]["post"]
    assert create["summary"] == "Create a VM"
    assert "requestBody" in create
    assert "403" not in create["responses"]
    disk = paths["/api/v1/m/vmware/vms/{id}/disks/{disk}"]["get"]
    assert [(p["name"], p["in"], p["required"]) for p in disk["parameters"]] == [
        ("id", "path", True),
        ("disk", "path", True),
    ]
    root = paths["/api/v1/m/vmware/"]["get"]
    assert "Answers 501" in root["description"]
    operation_ids = [op["operationId"] for item in paths.values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_catch_all_route_is_not_documented(fake: FakeServices) -> None:
    _, doc = document(fake)
    assert not any(path.startswith("/api/v1/m/") for path in doc["paths"])
    assert not any(t["name"].startswith("module:") for t in doc.get("tags", []))


def test_document_follows_the_table(fake: FakeServices, tmp_path: Path) -> None:
    fake.enable(compiled(tmp_path, VMS))
    client, doc = document(fake)
    assert "/api/v1/m/vmware/vms" in doc["paths"]
    again = client.get("/openapi.json").json()
    assert again == doc
    fake.routes.update(lambda table: table.without_module("vmware"))
    doc = client.get("/openapi.json").json()
    assert not any("/m/vmware" in path for path in doc["paths"])
    assert module_tag("vmware") not in [t["name"] for t in doc.get("tags", [])]
    fake.enable(compiled(tmp_path, manifest("other", capabilities=api(route("GET", "/x")))))
    doc = client.get("/openapi.json").json()
    assert "/api/v1/m/other/x" in doc["paths"]


def test_document_is_cached_per_table(fake: FakeServices, tmp_path: Path) -> None:
    fake.enable(compiled(tmp_path, VMS))
    app = make_app(fake)
    install_openapi(app, lambda: fake.routes.table)
    first = app.openapi()
    assert app.openapi() is first
    fake.routes.update(lambda table: table.without_module("vmware"))
    assert app.openapi() is not first


def test_base_document_is_not_modified(fake: FakeServices, tmp_path: Path) -> None:
    base: dict[str, Any] = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}}
    fake.enable(compiled(tmp_path, VMS))
    out = with_module_routes(base, fake.routes.table)
    assert "paths" not in base
    assert "/api/v1/m/vmware/vms" in out["paths"]
