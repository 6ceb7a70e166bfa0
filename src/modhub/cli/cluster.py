"""`modhub cluster nodes`: the cluster's nodes as a server sees them, through the API."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from modhub.cli.app import app, out
from modhub.cli.client import DEFAULT_URL, Token, Url, call

cluster_app = typer.Typer(help="The cluster's nodes (--url, --token).", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")
STATUS_STYLE = {"up": "green", "gone": "red", "stopped": "dim"}


def _when(value: str | None) -> str:
    # ISO 8601 from the API, shown to the second: "2026-12-05 17:44:19"
    return value.replace("T", " ")[:19] if value else "-"


def _modules(names: list[str]) -> str:
    shown = ", ".join(names[:3])
    return shown + (f" +{len(names) - 3}" if len(names) > 3 else "") if names else "-"


@cluster_app.command("nodes")
def nodes(
    as_json: Annotated[bool, typer.Option("--json", help="Print the nodes as JSON.")] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """List every node: status (up, gone, stopped), heartbeat, modules, workers, runs."""
    listed: list[dict[str, Any]] = call("GET", url, token, "/cluster/nodes")
    if as_json:
        typer.echo(json.dumps(listed, indent=2))
        return
    table = Table(
        "node",
        "status",
        "host",
        "pid",
        "address",
        "version",
        "started",
        "last heartbeat",
        "modules",
        "workers",
        "runs",
        "last error",
        caption=f"{len(listed)} node(s); * the node that answered",
    )
    for node in listed:
        style = STATUS_STYLE.get(node["status"], "")
        table.add_row(
            escape(node["id"][:12]) + (" *" if node["self"] else ""),
            f"[{style}]{escape(node['status'])}[/]" if style else escape(node["status"]),
            escape(node["host"]),
            str(node["pid"]),
            escape(node["address"] or "-"),
            escape(node["modhubVersion"]),
            _when(node["startedAt"]),
            _when(node["lastHeartbeatAt"]),
            escape(_modules(node["modulesMaterialized"])),
            str(node["liveWorkers"]),
            str(node["runsInFlight"]),
            escape(node["lastError"] or "-"),
        )
    out.print(table)
