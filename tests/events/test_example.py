"""The example modules: vmware-vcenter's POST /vms emits vm.created, and `notify` (which
depends on it and subscribes) records a notification its console page lists."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from modhub.registry import Status
from modhub.services import Services
from tests.conftest import bearer
from tests.events.conftest import ACTOR, Rig, set_status, with_rig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "modules"


def test_creating_a_vm_notifies_the_notify_module(
    services: Services, client: TestClient, tokens: dict[str, str]
) -> None:
    for name in ("core-auth", "vmware-vcenter", "notify"):
        services.lifecycle.add_bundle(EXAMPLES / name, actor=ACTOR)
    services.registry.set_config(
        "vmware-vcenter",
        {"vcenterHost": "vc.example", "vcenterUsername": "u", "vcenterPassword": "p"},
        actor=ACTOR,
    )
    set_status(services, "core-auth", Status.ENABLED)
    set_status(services, "vmware-vcenter", Status.ENABLED)
    set_status(services, "notify", Status.ENABLED)
    admin = bearer(tokens["admin"])
    created = client.post("/api/v1/m/vmware-vcenter/vms", json={"name": "web-01"}, headers=admin)
    assert created.status_code == 201, created.text
    vm = created.json()
    (event,) = client.get(
        "/api/v1/events", params={"source": "vmware-vcenter"}, headers=admin
    ).json()["items"]
    assert (event["name"], event["payload"]["id"], event["payload"]["createdBy"]) == (
        "vm.created",
        vm["id"],
        "admin",
    )
    assert [(d["subscriber"], d["status"]) for d in event["deliveries"]] == [("notify", "pending")]

    async def body(rig: Rig) -> None:
        await rig.settle()

    with_rig(services, body)
    listed = client.get("/api/v1/m/notify/notifications", headers=admin)
    assert listed.status_code == 200, listed.text
    (note,) = listed.json()["items"]
    assert note["eventId"] == event["id"]
    assert note["message"] == f"VM web-01 ({vm['id']}) was created by admin"
    shown = client.get(f"/api/v1/events/{event['id']}", headers=admin).json()
    assert [(d["subscriber"], d["status"]) for d in shown["deliveries"]] == [
        ("notify", "delivered")
    ]
