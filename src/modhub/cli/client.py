"""`modhub module ...`: registry commands that talk to a server through the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from modhub.cli.app import app, err, out
from modhub.manifest import ManifestFileError, load_manifest

module_app = typer.Typer(help="Modules on a running server (--url, --token).", no_args_is_help=True)
config_app = typer.Typer(help="Module configuration.", no_args_is_help=True)
module_app.add_typer(config_app, name="config")
app.add_typer(module_app, name="module")

Url = Annotated[str, typer.Option("--url", envvar="MODHUB_URL", help="Server URL")]
Token = Annotated[
    str | None,
    typer.Option("--token", envvar="MODHUB_TOKEN", help="Bearer token (modhub tokens create)"),
]
DEFAULT_URL = "http://127.0.0.1:4000"


def call(method: str, url: str, token: str | None, path: str, **kwargs: Any) -> Any:
    """Send one API request; print the problem and exit 1 when it fails."""
    if not token:
        err.print(
            "[red]error:[/] no token: pass --token or set MODHUB_TOKEN "
            "(create one with `modhub tokens create --user NAME`)"
        )
        raise typer.Exit(2)
    try:
        response = httpx.request(
            method,
            url.rstrip("/") + "/api/v1" + path,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
            **kwargs,
        )
    except httpx.HTTPError as exc:
        err.print(f"[red]error:[/] cannot reach {url}: {exc}")
        raise typer.Exit(2) from None
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = {"detail": response.text}
        err.print(f"[red]error {response.status_code}:[/] {body.get('detail', '')}")
        for item in body.get("errors") or []:
            err.print(
                f"  {item.get('path', '')}  {item.get('code', '')}  {item.get('message', '')}"
            )
        raise typer.Exit(1)
    return response.json() if response.content else None


@module_app.command("install")
def install(path: Path, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Register a module from its module.json (bundles with code: see the README)."""
    if path.is_dir() or path.suffix in (".zip", ".gz", ".tgz"):
        err.print(
            "[red]error:[/] uploading a module bundle (a folder or an archive with code) "
            "is not built yet; register its manifest with "
            f"`modhub module install {path / 'module.json' if path.is_dir() else 'module.json'}`"
        )
        raise typer.Exit(2)
    try:
        manifest = load_manifest(path)
    except ManifestFileError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    module = call("POST", url, token, "/modules", json={"manifest": manifest})
    out.print(f"registered {module['name']} {module['version']} ({module['status']})")


@module_app.command("list")
def list_modules(
    status: Annotated[str | None, typer.Option(help="Only this status")] = None,
    q: Annotated[str | None, typer.Option("--search", "-q", help="Search text")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """List modules."""
    params = {k: v for k, v in {"status": status, "q": q, "limit": 500}.items() if v}
    page = call("GET", url, token, "/modules", params=params)
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return
    table = Table("name", "version", "status", "display name")
    for item in page["items"]:
        table.add_row(item["name"], item["version"], item["status"], item["displayName"])
    out.print(table)
    out.print(f"{page['total']} module(s)")


@module_app.command("show")
def show(name: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Print a module as JSON."""
    typer.echo(json.dumps(call("GET", url, token, f"/modules/{name}"), indent=2))


def _set_status(
    name: str, status: str, cascade: bool, dry_run: bool, url: str, token: str | None
) -> None:
    params = {"cascade": str(cascade).lower(), "dryRun": str(dry_run).lower()}
    result = call(
        "PUT", url, token, f"/modules/{name}/status", json={"status": status}, params=params
    )
    if dry_run:
        for step in result["steps"]:
            out.print(f"would change {step['module']}: {step['from']} → {step['to']}")
        if not result["steps"]:
            out.print("nothing to change")
    else:
        out.print(f"{result['name']} is {result['status']}")


Cascade = Annotated[bool, typer.Option(help="Also change dependencies / dependents")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Only show what would change")]


@module_app.command("enable")
def enable(
    name: str,
    cascade: Cascade = False,
    dry_run: DryRun = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Enable a module (--cascade enables its dependencies first)."""
    _set_status(name, "ENABLED", cascade, dry_run, url, token)


@module_app.command("disable")
def disable(
    name: str,
    cascade: Cascade = False,
    dry_run: DryRun = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Disable a module (--cascade disables its dependents first)."""
    _set_status(name, "DISABLED", cascade, dry_run, url, token)


@module_app.command("remove")
def remove(name: str, dry_run: DryRun = False, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Remove a module and all its versions."""
    result = call("DELETE", url, token, f"/modules/{name}", params={"dryRun": str(dry_run).lower()})
    out.print(f"would remove {name}" if result else f"removed {name}")


@config_app.command("set")
def config_set(
    name: str,
    values: Annotated[list[str], typer.Argument(help="KEY=VALUE pairs; VALUE is JSON or text")],
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Set config values (others keep theirs; secrets are never printed)."""
    module = call("GET", url, token, f"/modules/{name}")
    config = dict(module["config"])
    for pair in values:
        key, sep, raw = pair.partition("=")
        if not sep:
            err.print(f"[red]error:[/] '{pair}' is not KEY=VALUE")
            raise typer.Exit(2)
        try:
            config[key] = json.loads(raw)
        except ValueError:
            config[key] = raw
    result = call("PUT", url, token, f"/modules/{name}/config", json={"config": config})
    typer.echo(json.dumps(result["config"], indent=2))
