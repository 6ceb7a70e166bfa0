"""`modhub events list|show|redeliver`: modules' events and their deliveries, through the API."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from modhub.cli.app import app, out
from modhub.cli.client import DEFAULT_URL, Token, Url, call

events_app = typer.Typer(
    help="Events modules emitted and their deliveries (--url, --token).", no_args_is_help=True
)
app.add_typer(events_app, name="events")
STATUS_STYLE = {"delivered": "green", "dead": "red", "running": "yellow", "pending": "dim"}
SHOWN = 60  # characters of a payload a listing shows


def _when(value: str | None) -> str:
    return value.replace("T", " ")[:19] if value else "-"


def _compact(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"


def _status(status: str) -> str:
    style = STATUS_STYLE.get(status, "")
    return f"[{style}]{escape(status)}[/]" if style else escape(status)


def _deliveries(event: dict[str, Any]) -> str:
    return (
        ", ".join(f"{escape(d['subscriber'])} {_status(d['status'])}" for d in event["deliveries"])
        or "-"
    )


@events_app.command("list")
def events_list(
    source: Annotated[str | None, typer.Option(help="Only events of this module")] = None,
    name: Annotated[str | None, typer.Option(help="Only events of this name")] = None,
    status: Annotated[
        str | None,
        typer.Option(help="Only events with a delivery pending, running, delivered or dead"),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many events")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many events")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the page as JSON.")] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """List events, newest first, with each subscriber's delivery state."""
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    for key, value in (("source", source), ("name", name), ("status", status)):
        if value is not None:
            params[key] = value
    page = call("GET", url, token, "/events", params=params)
    if as_json:
        typer.echo(json.dumps(page, indent=2, ensure_ascii=False))
        return
    table = Table(
        "id",
        "source",
        "name",
        "emitted",
        "payload",
        "deliveries",
        caption=f"{len(page['items'])} of {page['total']} event(s)",
    )
    for event in page["items"]:
        table.add_row(
            str(event["id"]),
            escape(event["source"]),
            escape(event["name"]),
            _when(event["emittedAt"]),
            escape(_compact(event["payload"])),
            _deliveries(event),
        )
    out.print(table)


@events_app.command("show")
def events_show(
    event_id: Annotated[int, typer.Argument(min=1, help="The event's id")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the event as JSON.")] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Show one event: its payload and every subscriber's delivery, with the last error."""
    event = call("GET", url, token, f"/events/{event_id}")
    if as_json:
        typer.echo(json.dumps(event, indent=2, ensure_ascii=False))
        return
    out.print(
        f"event {event['id']}: {escape(event['source'])}/{escape(event['name'])} "
        f"(#{event['seq']} of its source), emitted {_when(event['emittedAt'])}"
    )
    typer.echo(json.dumps(event["payload"], indent=2, ensure_ascii=False))
    table = Table("subscriber", "status", "attempt", "next attempt", "finished", "last error")
    for d in event["deliveries"]:
        table.add_row(
            escape(d["subscriber"]),
            _status(d["status"]),
            str(d["attempt"]),
            _when(d["nextAttemptAt"]),
            _when(d["finishedAt"]),
            escape(d["lastError"] or "-"),
        )
    out.print(table)


@events_app.command("redeliver")
def events_redeliver(
    event_id: Annotated[int, typer.Argument(min=1, help="The event's id")],
    subscriber: Annotated[str, typer.Option(help="The subscribing module to deliver it to")],
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Deliver an event to a subscriber again (a dead or delivered delivery)."""
    event = call(
        "POST", url, token, f"/events/{event_id}/redeliver", params={"subscriber": subscriber}
    )
    state = next((d for d in event["deliveries"] if d["subscriber"] == subscriber), None)
    out.print(
        f"event {event_id} to {escape(subscriber)}: "
        + (_status(state["status"]) if state else "no delivery")
    )
