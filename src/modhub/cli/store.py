"""`modhub module store ...`: an operator's view of a module's store, through the API."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape
from rich.table import Table

from modhub.cli.app import out
from modhub.cli.client import DEFAULT_URL, Token, Url, call, module_app

store_app = typer.Typer(
    help="A module's stored data (admin only; --url, --token).", no_args_is_help=True
)
module_app.add_typer(store_app, name="store")
SHOWN = 60  # characters of a value a listing shows


def _path(name: str, key: str) -> str:
    # Every character quoted, '/' too: a key is one path segment's worth of text, and a
    # '?' or '#' in it must not end the path.
    return f"/modules/{quote(name, safe='')}/store/{quote(key, safe='')}"


def _compact(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"


@store_app.command("list")
def store_list(
    name: str,
    prefix: Annotated[str, typer.Option(help="Only keys starting with this")] = "",
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many keys")] = 100,
    cursor: Annotated[str | None, typer.Option(help="Where the last listing stopped")] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """List a module's keys in order, with their versions, expiry and values."""
    params: dict[str, Any] = {"prefix": prefix, "limit": limit}
    if cursor is not None:
        params["cursor"] = cursor
    page = call("GET", url, token, f"/modules/{quote(name, safe='')}/store", params=params)
    table = Table("key", "version", "expires", "value")
    for item in page["items"]:
        table.add_row(
            escape(item["key"]),
            str(item["version"]),
            item["expiresAt"] or "-",
            escape(_compact(item["value"])),
        )
    out.print(table)
    if page["cursor"]:
        out.print(f"more: --cursor {page['cursor']}")


@store_app.command("get")
def store_get(name: str, key: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Print the JSON value of one key."""
    entry = call("GET", url, token, _path(name, key))
    typer.echo(json.dumps(entry["value"], indent=2, ensure_ascii=False))


@store_app.command("delete")
def store_delete(name: str, key: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Delete one key."""
    call("DELETE", url, token, _path(name, key))
    out.print(f"deleted {escape(key)} from {escape(name)}'s store")
