"""The platform's events: enabling, disabling, upgrading a module and changing its config
emit `modhub/module.*` in the change's transaction, delivered to their subscribers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modhub.registry import Status
from modhub.services import Services
from tests.events.conftest import (
    ACTOR,
    Rig,
    emitter,
    install,
    seen,
    set_status,
    unique,
    with_rig,
)

PLATFORM = ("module.enabled", "module.disabled", "module.upgraded", "module.config_changed")


def watcher(name: str) -> dict[str, Any]:
    """Return a module subscribed to the platform's module events."""
    return {
        "name": name,
        "version": "1.0.0",
        "displayName": name,
        "capabilities": {
            "events": {
                "subscribes": [
                    {"event": f"modhub/{event}", "handler": "events/record.py"}
                    for event in PLATFORM
                ]
            }
        },
    }


def test_module_changes_are_delivered_as_platform_events(services: Services, sources: Path) -> None:
    watch = install(services, sources, watcher(unique("watch")))
    manifest = emitter(unique("src"))
    manifest["config"] = {"schema": {"token": {"type": "password"}, "size": {"type": "integer"}}}
    other = install(services, sources, manifest)  # enabled
    services.registry.set_config(other, {"token": "s3cret", "size": 3}, actor=ACTOR)
    set_status(services, other, Status.DISABLED)
    newer = dict(manifest, version="1.1.0")
    services.lifecycle.add_bundle(_folder(sources, newer), actor=ACTOR)
    done, _, op = services.lifecycle.upgrade(other, "1.1.0", actor=ACTOR)  # type: ignore[misc]
    assert done, op

    async def body(rig: Rig) -> None:
        await rig.settle()

    with_rig(services, body)
    records = [(r["source"], r["name"], r["payload"]) for r in seen(services, watch)]
    mine = [(s, n, p) for s, n, p in records if p.get("module") == other]
    assert mine == [
        ("modhub", "module.enabled", {"module": other, "from": "DISABLED"}),
        ("modhub", "module.config_changed", {"module": other, "changed": ["size", "token"]}),
        ("modhub", "module.disabled", {"module": other, "from": "ENABLED"}),
        (
            "modhub",
            "module.upgraded",
            {"module": other, "from": "1.0.0", "to": "1.1.0", "kind": "upgrade"},
        ),
    ]
    assert "s3cret" not in str(records)  # a config change names keys, never values


def _folder(root: Path, manifest: dict[str, Any]) -> Path:
    from tests.events.conftest import EMIT_ROUTE, write_module

    return write_module(root, manifest, {"routes/emit.py": EMIT_ROUTE})


def test_a_job_failing_its_last_attempt_emits_job_failed(services: Services, sources: Path) -> None:
    watch = install(
        services,
        sources,
        {
            "name": unique("watch"),
            "version": "1.0.0",
            "displayName": "watch",
            "capabilities": {
                "events": {
                    "subscribes": [{"event": "modhub/job.failed", "handler": "events/record.py"}]
                }
            },
        },
    )
    manifest = emitter(unique("jobs"))
    manifest["capabilities"]["jobs"] = {"handlers": [{"name": "boom", "handler": "events/fail.py"}]}
    failing = install(services, sources, manifest)

    async def body(rig: Rig) -> None:
        runner = services.jobs
        runner.pool = rig.pool  # this loop's workers
        run = runner.run_now(failing, "boom")
        await runner.tick(runner.clock())
        await runner.drain()
        await rig.settle()
        records = [r for r in seen(services, watch) if r["name"] == "job.failed"]
        assert [(r["source"], r["payload"]["module"], r["payload"]["job"]) for r in records] == [
            ("modhub", failing, "boom")
        ]
        assert records[0]["payload"]["runId"] == run.id
        assert records[0]["payload"]["status"] == "failed"

    with_rig(services, body)
