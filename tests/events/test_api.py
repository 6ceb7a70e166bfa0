"""GET /events, GET /events/{id}, POST /events/{id}/redeliver and `modhub events
list|show|redeliver` over the same API (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from modhub.cli import client as cli_client
from modhub.cli.app import app
from modhub.services import Services
from tests.conftest import bearer
from tests.events.conftest import (
    Rig,
    deliveries,
    emitter,
    install,
    subscriber,
    tries,
    unique,
    with_rig,
)

runner = CliRunner()


@pytest.fixture
def world(services: Services, sources: Path) -> dict[str, Any]:
    """A source, a recording subscriber and a failing one (no retries), two events
    delivered: the failing subscriber's deliveries are dead."""
    source = install(services, sources, emitter(unique("src")))
    good = install(services, sources, subscriber(unique("good"), source))
    bad = install(services, sources, subscriber(unique("bad"), source, "events/fail.py", retries=0))

    async def body(rig: Rig) -> list[int]:
        ids = [rig.emit(source, {"n": 1}), rig.emit(source, {"n": 2})]
        rig.emit(source, {}, name="thing.gone")
        await rig.settle()
        return ids

    ids = with_rig(services, body)
    return {"source": source, "good": good, "bad": bad, "ids": ids}


def test_list_filters_and_shows_each_subscribers_state(
    client: TestClient, tokens: dict[str, str], world: dict[str, Any]
) -> None:
    headers = bearer(tokens["viewer"])
    everything = client.get("/api/v1/events", headers=headers).json()
    # The platform's own events (modules enabled while the world was made) are listed too.
    assert {e["source"] for e in everything["items"]} == {world["source"], "modhub"}
    page = client.get("/api/v1/events", params={"source": world["source"]}, headers=headers)
    page = page.json()
    assert page["total"] == 3
    assert [e["name"] for e in page["items"]] == ["thing.gone", "thing.happened", "thing.happened"]
    newest = page["items"][1]
    assert newest["payload"] == {"n": 2}
    assert {d["subscriber"]: d["status"] for d in newest["deliveries"]} == {
        world["good"]: "delivered",
        world["bad"]: "dead",
    }
    dead = next(d for d in newest["deliveries"] if d["status"] == "dead")
    assert dead["attempt"] == 1
    assert "failed" in dead["lastError"]
    filtered = client.get(
        "/api/v1/events",
        params={"source": world["source"], "name": "thing.happened", "limit": 1, "offset": 1},
        headers=headers,
    ).json()
    assert (filtered["total"], [e["id"] for e in filtered["items"]]) == (2, [world["ids"][0]])
    assert (
        client.get("/api/v1/events", params={"status": "dead"}, headers=headers).json()["total"]
        == 2
    )
    wrong = client.get("/api/v1/events", params={"status": "lost"}, headers=headers)
    assert wrong.status_code == 422
    assert "status" in wrong.text


def test_show_one_and_404(
    client: TestClient, tokens: dict[str, str], world: dict[str, Any]
) -> None:
    headers = bearer(tokens["viewer"])
    event = client.get(f"/api/v1/events/{world['ids'][0]}", headers=headers).json()
    assert (event["source"], event["name"], event["seq"], event["payload"]) == (
        world["source"],
        "thing.happened",
        1,
        {"n": 1},
    )
    missing = client.get("/api/v1/events/999999", headers=headers)
    assert missing.status_code == 404


def test_redeliver_needs_modules_write_and_makes_a_dead_delivery_pending(
    services: Services, client: TestClient, tokens: dict[str, str], world: dict[str, Any]
) -> None:
    event_id, bad = world["ids"][0], world["bad"]
    path = f"/api/v1/events/{event_id}/redeliver"
    refused = client.post(path, params={"subscriber": bad}, headers=bearer(tokens["viewer"]))
    assert refused.status_code == 403
    unknown = client.post(path, params={"subscriber": "nobody"}, headers=bearer(tokens["operator"]))
    assert unknown.status_code == 404
    answer = client.post(path, params={"subscriber": bad}, headers=bearer(tokens["operator"]))
    assert answer.status_code == 200, answer.text
    state = {d["subscriber"]: d for d in answer.json()["deliveries"]}
    assert (state[bad]["status"], state[bad]["attempt"]) == ("pending", 0)

    async def body(rig: Rig) -> None:
        await rig.settle()

    with_rig(services, body)
    assert tries(services, bad, event_id) == 2
    assert [d.status for d in deliveries(services, event_id=event_id, subscriber=bad)] == ["dead"]


def test_the_cli_lists_shows_and_redelivers_through_the_api(
    monkeypatch: pytest.MonkeyPatch,
    client: TestClient,
    tokens: dict[str, str],
    world: dict[str, Any],
) -> None:
    def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
        kwargs.pop("timeout", None)
        return client.request(method, url.removeprefix("http://h:1"), **kwargs)

    monkeypatch.setattr(cli_client.httpx, "request", request)
    flags = ["--url", "http://h:1", "--token", tokens["operator"]]
    listed = runner.invoke(app, ["events", "list", "--status", "dead", *flags])
    assert listed.exit_code == 0, listed.output
    assert "2 of 2 event(s)" in listed.output
    assert world["bad"][:8] in listed.output
    shown = runner.invoke(app, ["events", "show", str(world["ids"][1]), *flags])
    assert shown.exit_code == 0, shown.output
    assert '"n": 2' in shown.output
    assert "dead" in shown.output
    again = runner.invoke(
        app, ["events", "redeliver", str(world["ids"][1]), "--subscriber", world["bad"], *flags]
    )
    assert again.exit_code == 0, again.output
    assert "pending" in again.output
    missing = runner.invoke(app, ["events", "show", "999999", *flags])
    assert missing.exit_code == 1
