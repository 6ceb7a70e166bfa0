"""`modhub module ...`: registry commands that talk to a server through the API."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, BinaryIO

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn
from rich.table import Table

from modhub.cli.app import app, err, out

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


def __getattr__(name: str) -> ModuleType:
    """`client.httpx` (tests patch its `request`), imported on first use: httpx (its own
    command line's rich and pygments too) took as long again as typer and rich together."""
    if name == "httpx":
        import httpx

        return httpx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def call(method: str, url: str, token: str | None, path: str, **kwargs: Any) -> Any:
    """Send one API request; print the problem and exit 1 when it fails."""
    if not token:
        err.print(
            "[red]error:[/] no token: pass --token or set MODHUB_TOKEN "
            "(create one with `modhub tokens create --user NAME`)"
        )
        raise typer.Exit(2)
    import httpx

    try:
        response = httpx.request(
            method,
            url.rstrip("/") + "/api/v1" + path,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
            **kwargs,
        )
    except httpx.HTTPError as exc:
        err.print(f"[red]error:[/] cannot reach {escape(url)}: {escape(str(exc))}")
        raise typer.Exit(2) from None
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = {"detail": response.text}
        # What the server says is text, not Rich markup: '[' in it must print as it is.
        err.print(f"[red]error {response.status_code}:[/] {escape(str(body.get('detail', '')))}")
        for item in body.get("errors") or []:
            err.print(
                escape(
                    f"  {item.get('path', '')}  {item.get('code', '')}  {item.get('message', '')}"
                )
            )
        raise typer.Exit(1)
    return response.json() if response.content else None


@module_app.command("install")
def install(
    path: Annotated[Path, typer.Argument(help="A module folder, .zip, .tar.gz, or module.json")],
    enable_after: Annotated[
        bool, typer.Option("--enable", help="Enable it when installed")
    ] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Upload a module (a folder is packed first), register it, and install it."""
    from modhub.manifest import ManifestFileError, load_manifest

    if path.is_file() and path.suffix == ".json":
        try:
            manifest = load_manifest(path)
        except ManifestFileError as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}")
            raise typer.Exit(1) from None
        module = call("POST", url, token, "/modules", json={"manifest": manifest})
    else:
        module = _upload(path, url, token)
    name = module["name"]
    if module["status"] in ("ENABLED", "DISABLED"):
        newest = module["versions"][0]["version"] if module["versions"] else module["version"]
        out.print(
            f"{name} is installed at {module['version']} ({module['status']}); "
            f"{newest} is registered beside it: "
            f"`modhub module upgrade {name} {newest}` switches to it"
        )
        return
    out.print(f"registered {name} {module['version']}")
    target = "ENABLED" if enable_after else "DISABLED"
    result = call("PUT", url, token, f"/modules/{name}/status", json={"status": target})
    result = wait_for(result, url, token)
    out.print(f"{name} {result['version']} is {result['status']}")


def _upload(path: Path, url: str, token: str | None) -> Any:
    from modhub.lifecycle.bundle import pack_folder  # modhub.lifecycle: the services' imports

    with tempfile.TemporaryDirectory() as tmp:
        if path.is_dir():
            bundle = pack_folder(path, Path(tmp) / f"{path.name}.tar.gz")
        elif path.is_file() and path.name.endswith((".zip", ".tar.gz", ".tgz")):
            bundle = path
        else:
            err.print(f"[red]error:[/] {path} is not a module folder, .zip, .tar.gz or module.json")
            raise typer.Exit(2)
        size = bundle.stat().st_size
        with Progress(
            TextColumn("uploading {task.description}"), BarColumn(), DownloadColumn(), console=err
        ) as progress:
            task = progress.add_task(bundle.name, total=size)
            with bundle.open("rb") as raw:
                reader = _Counting(raw, lambda n: progress.advance(task, n))
                return call(
                    "POST",
                    url,
                    token,
                    "/modules/bundles",
                    files={"file": (bundle.name, reader, "application/octet-stream")},
                )


class _Counting:
    """A file wrapper that reports how much has been read (for the upload bar)."""

    def __init__(self, raw: BinaryIO, seen: Callable[[int], None]) -> None:
        self.raw = raw
        self.seen = seen

    def read(self, size: int = -1) -> bytes:
        chunk = self.raw.read(size)
        self.seen(len(chunk))
        return chunk


def is_operation(result: Any) -> bool:
    """Return whether an API answer is a running operation (a 202)."""
    return isinstance(result, dict) and "steps" in result and "kind" in result


def follow(result: dict[str, Any], url: str, token: str | None) -> dict[str, Any]:
    """Poll an operation until it ends, printing its steps; exit 1 when it failed."""
    op_id, shown = result["id"], 0
    with err.status(f"{result['kind']} {result['module']}…"):
        while result["status"] == "running":
            time.sleep(0.5)
            result = call("GET", url, token, f"/operations/{op_id}")
            for step in result["steps"][shown:]:
                err.print(f"  step {step['name']}")
            shown = len(result["steps"])
    if result["status"] != "succeeded":
        err.print(f"[red]error:[/] {result['kind']} failed: {escape(str(result['error']))}")
        raise typer.Exit(1)
    return result


def wait_for(result: Any, url: str, token: str | None) -> Any:
    """Return the module an answer is about, following a 202 operation to its end."""
    if not is_operation(result):
        return result
    return call("GET", url, token, f"/modules/{follow(result, url, token)['module']}")


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
        table.add_row(*(escape(str(item[k])) for k in ("name", "version", "status", "displayName")))
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
        result = wait_for(result, url, token)
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
def remove(
    name: str,
    dry_run: DryRun = False,
    keep_data: Annotated[
        bool, typer.Option("--keep-data", help="Keep the module's stored data")
    ] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Remove a module, all its versions and (unless --keep-data) its stored data."""
    params = {"dryRun": str(dry_run).lower(), "keepData": str(keep_data).lower()}
    result = call("DELETE", url, token, f"/modules/{name}", params=params)
    if dry_run:
        data = result["data"]
        fate = "keeping" if data["kept"] else "deleting"
        out.print(
            f"would remove {name}, {fate} its {data['keys']} stored keys ({data['bytes']} bytes)"
        )
        return
    if is_operation(result):
        follow(result, url, token)
    out.print(f"removed {name}" + (", its stored data kept" if keep_data else ""))


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
            err.print(f"[red]error:[/] '{escape(pair)}' is not KEY=VALUE")
            raise typer.Exit(2)
        try:
            config[key] = json.loads(raw)
        except ValueError:
            config[key] = raw
    result = call("PUT", url, token, f"/modules/{name}/config", json={"config": config})
    typer.echo(json.dumps(result["config"], indent=2))


@module_app.command("upgrade")
def upgrade(name: str, version: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Switch a module to another registered version (the old one stays on failure)."""
    result = call("POST", url, token, f"/modules/{name}/upgrade", json={"version": version})
    result = wait_for(result, url, token)
    out.print(f"{name} is at {result['version']} ({result['status']})")


@module_app.command("rollback")
def rollback(name: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Return a module to the version it had before its last upgrade."""
    result = wait_for(call("POST", url, token, f"/modules/{name}/rollback"), url, token)
    out.print(f"{name} is back at {result['version']} ({result['status']})")


@module_app.command("logs")
def logs(
    name: str,
    url: Url = DEFAULT_URL,
    token: Token = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many of the last lines")] = 200,
) -> None:
    """Print the tail of a module's worker log."""
    for line in call("GET", url, token, f"/modules/{name}/logs", params={"limit": limit})["lines"]:
        typer.echo(line)


@module_app.command("verify")
def verify(name: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Report every file of a module changed since it was installed (exit 1 if any)."""
    result = call("GET", url, token, f"/modules/{name}/verify")
    for change in result["changes"]:
        out.print(f"{change['change']:9} {change['path']}")
    if not result["intact"]:
        raise typer.Exit(1)
    out.print(f"{name}: every file is as installed")


jobs_app = typer.Typer(
    help="Module jobs on a running server (--url, --token).", no_args_is_help=True
)
app.add_typer(jobs_app, name="jobs")


@jobs_app.command("list")
def jobs_list(module: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """List a module's jobs with their next fire times."""
    table = Table("job", "schedule", "timezone", "next runs")
    for job in call("GET", url, token, f"/modules/{module}/jobs"):
        table.add_row(
            job["name"],
            job["schedule"] or "(on demand)",
            job["timezone"],
            ", ".join(job["nextRuns"]) or "-",
        )
    out.print(table)


@jobs_app.command("run")
def jobs_run(
    module: str,
    job: str,
    wait: Annotated[bool, typer.Option(help="Wait for the run to finish")] = True,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Run a job now."""
    run = call("POST", url, token, f"/modules/{module}/jobs/{job}/run")
    with err.status(f"running {module}/{job}…"):
        while wait and run["status"] in ("queued", "running"):
            time.sleep(0.5)
            run = call("GET", url, token, f"/jobs/runs/{run['id']}")
    typer.echo(json.dumps(run, indent=2))
    if run["status"] not in ("queued", "running", "succeeded"):
        raise typer.Exit(1)


@jobs_app.command("runs")
def jobs_runs(
    module: Annotated[str | None, typer.Option(help="Only this module")] = None,
    job: Annotated[str | None, typer.Option(help="Only this job")] = None,
    status: Annotated[str | None, typer.Option(help="Only this status")] = None,
    limit: int = 20,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """List recent job runs."""
    params = {
        k: v
        for k, v in {"module": module, "job": job, "status": status, "limit": limit}.items()
        if v
    }
    page = call("GET", url, token, "/jobs/runs", params=params)
    table = Table("id", "module", "job", "scheduled", "attempt", "status", "error")
    for run in page["items"]:
        table.add_row(
            str(run["id"]),
            run["module"],
            run["job"],
            run["scheduledAt"],
            str(run["attempt"]),
            run["status"],
            run["error"] or "",
        )
    out.print(table)


@jobs_app.command("logs")
def jobs_logs(run_id: int, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Print a run's result or error and the tail of its log."""
    run = call("GET", url, token, f"/jobs/runs/{run_id}")
    out.print(f"{run['module']}/{run['job']} attempt {run['attempt']}: {run['status']}")
    if run["error"]:
        out.print(f"error: {run['error']}")
    if run["result"] is not None:
        typer.echo(json.dumps(run["result"], indent=2))
    typer.echo(run["logTail"])
