"""Emitting from a real worker: the event is stored before `emit` returns, a bad payload or
an undeclared name raises EventInvalid in the handler, and a module emits only as itself."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modhub.events import EventInvalid
from modhub.registry import Status
from modhub.sandbox.channel import CallerContext
from modhub.services import Services
from tests.conftest import bearer
from tests.events.conftest import (
    ACTOR,
    EMIT_ROUTE,
    Rig,
    deliveries,
    emitter,
    install,
    seen,
    set_status,
    subscriber,
    unique,
    with_rig,
    write_module,
)


def emit(client: TestClient, token: str, module: str, name: str, payload: object) -> Any:
    answer = client.post(
        f"/api/v1/m/{module}/emit",
        json={"name": name, "payload": payload},
        headers=bearer(token),
    )
    assert answer.status_code in (200, 422), answer.text
    return {"status": answer.status_code, **answer.json()}


def test_a_handler_emits_and_a_subscriber_handles_it_in_its_worker(
    services: Services, sources: Path, client: TestClient, tokens: dict[str, str]
) -> None:
    source = install(services, sources, emitter(unique("src")))
    sink = install(services, sources, subscriber(unique("sub"), source))
    answer = emit(client, tokens["admin"], source, "thing.happened", {"n": 7, "vm": "web"})
    assert answer["status"] == 200
    # Durable when emit returned: the event and its delivery are in the database already.
    stored = services.events.store.get(answer["id"])
    assert (stored["source"], stored["name"], stored["seq"], stored["payload"]) == (
        source,
        "thing.happened",
        answer["seq"],
        {"n": 7, "vm": "web"},
    )
    assert [(d["subscriber"], d["status"]) for d in stored["deliveries"]] == [(sink, "pending")]

    async def body(rig: Rig) -> None:
        await rig.settle()

    with_rig(services, body)
    (record,) = seen(services, sink)
    assert (record["id"], record["source"], record["payload"]) == (
        answer["id"],
        source,
        {"n": 7, "vm": "web"},
    )


BAD = [
    ("thing.happened", {"vm": "no n"}, "payload: "),
    ("thing.happened", {"n": "seven"}, "payload/n: "),
    ("thing.happened", {"n": 1, "extra": True}, "payload: "),
    ("thing.undeclared", {"n": 1}, "name: "),
    ("Not A Name", {"n": 1}, "name: "),
]


def test_a_bad_event_raises_event_invalid_in_the_handler_and_stores_nothing(
    services: Services, sources: Path, client: TestClient, tokens: dict[str, str]
) -> None:
    source = install(services, sources, emitter(unique("src")))
    install(services, sources, subscriber(unique("sub"), source))
    for name, payload, field in BAD:  # one module pair for every case: installs are slow
        answer = emit(client, tokens["admin"], source, name, payload)
        assert answer["status"] == 422, (name, payload)
        assert answer["error"] == "EventInvalid"
        assert answer["message"].startswith(field), answer["message"]
    assert services.events.store.search(source=source)["total"] == 0
    assert deliveries(services) == []


def caller(module: str, version: str = "1.0.0") -> CallerContext:
    return CallerContext(module=module, version=version, user=None, job="j", deadline=0.0)


def test_a_module_emits_only_as_itself_whatever_the_frame_says(
    services: Services, sources: Path
) -> None:
    source = install(services, sources, emitter(unique("src")))
    other = install(services, sources, emitter(unique("src")))
    sink = install(services, sources, subscriber(unique("sub"), other))
    forged = {
        "name": "thing.happened",
        "payload": {"n": 1},
        "source": other,
        "module": other,
    }
    done = asyncio.run(services.events.handle(caller(source), "emit", forged))
    event = services.events.store.get(done["id"])
    assert event["source"] == source
    assert event["deliveries"] == []  # the subscriber of `other` gets nothing
    assert deliveries(services, subscriber=sink) == []
    # A module that declares no events cannot emit any, and there is no way to read events.
    with pytest.raises(EventInvalid, match=r"^name: module"):
        asyncio.run(services.events.handle(caller(sink), "emit", forged))
    for op in ("list", "get", "redeliver", "search", "__init__"):
        with pytest.raises(EventInvalid, match="no operation"):
            asyncio.run(services.events.handle(caller(sink), op, {"id": done["id"]}))


FORGE = '''
import fcntl, json, os, struct, time


def handler(request):
    """Hand-made frames on the protocol pipe: emit as the victim, read its events."""
    out = next(
        int(fd) for fd in os.listdir("/proc/self/fd")
        if int(fd) > 2 and os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
        and fcntl.fcntl(int(fd), fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY
    )
    victim = request.query["victim"]
    frames = []
    for rid in [*range(1, 50), 10**9, "victim", None]:
        for op, args in [
            ("emit", {"name": "thing.happened", "payload": {"n": 666}, "source": victim,
                      "module": victim}),
            ("list", {"source": victim}),
            ("get", {"id": 1}),
        ]:
            frames.append({"call": 10**6 + len(frames), "rid": rid, "service": "events",
                           "op": op, "module": victim, "args": args})
    for frame in frames:
        data = json.dumps(frame).encode()
        os.write(out, struct.pack(">I", len(data)) + data)
    time.sleep(0.5)  # the server answers each; none is this request's own call
    return {"sent": len(frames)}
'''


def test_crafted_frames_never_emit_as_another_module_nor_read_its_events(
    services: Services, sources: Path, client: TestClient, tokens: dict[str, str]
) -> None:
    victim = install(services, sources, emitter(unique("victim")))
    forger_manifest = emitter(unique("forger"))
    forger_manifest["capabilities"]["api"]["routes"].append(
        {"method": "POST", "path": "/forge", "handler": "routes/forge.py"}
    )
    written = write_module(
        sources, forger_manifest, {"routes/emit.py": EMIT_ROUTE, "routes/forge.py": FORGE}
    )
    services.lifecycle.add_bundle(written, actor=ACTOR)
    set_status(services, forger_manifest["name"], Status.ENABLED)
    sink = install(services, sources, subscriber(unique("sub"), victim))
    emit(client, tokens["admin"], victim, "thing.happened", {"n": 1})
    answer = client.post(
        f"/api/v1/m/{forger_manifest['name']}/forge",
        params={"victim": victim},
        headers=bearer(tokens["admin"]),
    )
    assert answer.status_code == 200, answer.text
    # The victim has its one event; the victim's subscriber has one delivery.
    assert [e["payload"] for e in services.events.store.search(source=victim)["items"]] == [
        {"n": 1}
    ]
    assert len(deliveries(services, subscriber=sink)) == 1
    # Any forged emit that got through was the forger's own (its rid was one of its requests).
    forged = services.events.store.search(source=forger_manifest["name"])["items"]
    assert all(e["payload"] == {"n": 666} for e in forged)
