"""`capabilities.events` in the manifest: the rules `modhub validate` applies, the warning a
server adds for an undeclared event, and the 409 when enabling such a subscriber."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modhub.errors import Conflict
from modhub.manifest import validate_manifest
from modhub.registry import Status
from modhub.services import Services
from tests.conftest import bearer
from tests.events.conftest import emitter, install, subscriber, unique, write_module


def manifest(events: dict[str, Any], deps: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": "notify",
        "version": "1.0.0",
        "displayName": "Notify",
        "dependencies": {"modules": deps or {"vmware-vcenter": "^1.0.0"}},
        "capabilities": {"events": events},
    }


def codes(data: dict[str, Any]) -> list[tuple[str, str]]:
    result = validate_manifest(data)
    return [(e.path, e.code) for e in result.errors]


def test_a_module_emitting_and_subscribing_validates() -> None:
    data = manifest(
        {
            "emits": [{"name": "note.sent", "schema": {"type": "object"}}],
            "subscribes": [
                {"event": "vmware-vcenter/vm.created", "handler": "events/on.py", "retries": 0},
                {"event": "modhub/module.enabled", "handler": "events/on.py:enabled"},
            ],
        }
    )
    result = validate_manifest(data)
    assert result.valid, result.errors
    assert result.warnings == []


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        (
            {"emits": [{"name": "VM-created"}]},
            ("/capabilities/events/emits/0/name", "invalid_event_name"),
        ),
        ({"emits": [{"name": "vm."}]}, ("/capabilities/events/emits/0/name", "invalid_event_name")),
        (
            {"emits": [{"name": "a.b"}, {"name": "a.b"}]},
            ("/capabilities/events/emits/1/name", "duplicate_event"),
        ),
        (
            {"emits": [{"name": "a.b", "schema": {"type": 5}}]},
            ("/capabilities/events/emits/0/schema", "invalid_event_schema"),
        ),
        (
            {"subscribes": [{"event": "vm.created", "handler": "e.py"}]},
            ("/capabilities/events/subscribes/0/event", "invalid_event_ref"),
        ),
        (
            {"subscribes": [{"event": "stranger/vm.created", "handler": "e.py"}]},
            ("/capabilities/events/subscribes/0/event", "subscription_not_dependency"),
        ),
        (
            {"subscribes": [{"event": "notify/own.event", "handler": "e.py"}]},
            ("/capabilities/events/subscribes/0/event", "subscription_not_dependency"),
        ),
        (
            {"subscribes": [{"event": "modhub/module.exploded", "handler": "e.py"}]},
            ("/capabilities/events/subscribes/0/event", "unknown_platform_event"),
        ),
        (
            {
                "subscribes": [
                    {"event": "vmware-vcenter/vm.created", "handler": "e.py"},
                    {"event": "vmware-vcenter/vm.created", "handler": "f.py"},
                ]
            },
            ("/capabilities/events/subscribes/1/event", "duplicate_subscription"),
        ),
        (
            {
                "subscribes": [
                    {"event": "vmware-vcenter/vm.created", "handler": "e.py", "retries": 11}
                ]
            },
            ("/capabilities/events/subscribes/0/retries", "out_of_range"),
        ),
        (
            {"subscribes": [{"event": "vmware-vcenter/vm.created", "handler": "../e.py"}]},
            ("/capabilities/events/subscribes/0/handler", "invalid_handler"),
        ),
    ],
)
def test_each_broken_rule_is_an_error_at_its_field(
    events: dict[str, Any], expected: tuple[str, str]
) -> None:
    assert expected in codes(manifest(events))


def test_a_missing_handler_file_is_an_error_in_folder_mode(tmp_path: Path) -> None:
    data = manifest(
        {"subscribes": [{"event": "vmware-vcenter/vm.created", "handler": "events/on.py"}]}
    )
    folder = write_module(tmp_path, data, {})
    result = validate_manifest(data, folder=folder)
    assert [(e.path, e.code) for e in result.errors] == [
        ("/capabilities/events/subscribes/0/handler", "handler_not_found")
    ]
    folder = write_module(tmp_path / "ok", data, {"events/on.py": "def handler(event): pass\n"})
    assert validate_manifest(data, folder=folder).valid


def test_an_undeclared_event_is_a_warning_on_the_server_and_a_409_at_enable(
    services: Services, sources: Path, client: TestClient, tokens: dict[str, str]
) -> None:
    source = install(services, sources, emitter(unique("src")))
    wrong = subscriber(unique("sub"), source)
    wrong["capabilities"]["events"]["subscribes"][0]["event"] = f"{source}/thing.vanished"
    answer = client.post(
        "/api/v1/modules/validate", json={"manifest": wrong}, headers=bearer(tokens["admin"])
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["valid"] is True
    assert [(w["path"], w["code"]) for w in body["warnings"]] == [
        ("/capabilities/events/subscribes/0/event", "undeclared_event")
    ]
    assert "thing.vanished" in body["warnings"][0]["message"]
    name = install(services, sources, wrong, enable=False)
    with pytest.raises(Conflict) as refused:
        services.lifecycle.set_status(name, Status.ENABLED, actor="t")
    assert "thing.vanished" in refused.value.detail
    assert services.registry.get(name).status == Status.REGISTERED
    answer = client.put(
        f"/api/v1/modules/{name}/status",
        json={"status": "ENABLED"},
        headers=bearer(tokens["admin"]),
    )
    assert answer.status_code == 409, answer.text
    assert "thing.vanished" in answer.json()["detail"]
