"""`modhub doctor`: what this machine gives modhub, isolation first."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from modhub import __version__
from modhub.cli.app import app, load_settings, out
from modhub.errors import WorkerUnavailable

# modhub.lifecycle and modhub.sandbox bring the services' imports (SQLAlchemy, the
# registry...): imported when `modhub doctor` runs, not by every command.


@app.command()
def doctor(
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="The data dir to check")
    ] = None,
) -> None:
    """Say which isolation module workers get here, and check the tools modhub uses."""
    from modhub.lifecycle.environment import uv_bin
    from modhub.sandbox.cgroups import Cgroups
    from modhub.sandbox.launch import bwrap_path, isolation

    settings = load_settings(data_dir=data_dir)
    table = Table("check", "result")
    mode = isolation()
    bwrap = bwrap_path()
    if mode == "bubblewrap" and bwrap:
        version = _version([bwrap, "--version"])
        uid = (
            "each module runs as its own user id"
            if os.getuid() == 0
            else ("modules share modhub's user id (start modhub as root for per-module ids)")
        )
        table.add_row(
            "isolation",
            f"bubblewrap ({version}): own mount, PID, IPC and network "
            f"namespaces, read-only code, private /tmp, no data dir; rlimits; {uid}",
        )
    elif mode == "refused":
        table.add_row(
            "isolation",
            "none: modhub runs as root without bubblewrap, so no module code is started "
            "(apt-get install bubblewrap, or run modhub as an unprivileged user)",
        )
    else:
        table.add_row(
            "isolation",
            "rlimits and a scrubbed environment only "
            "(install bubblewrap for namespaces: apt-get install bubblewrap)",
        )
    table.add_row(
        "installs",
        ("in the module's sandbox" if mode == "bubblewrap" else "as modhub's own user")
        + "; "
        + ("source builds allowed" if settings.pip_allow_source_builds else "wheels only")
        + ("; URL and VCS requirements allowed" if settings.pip_allow_direct_references else ""),
    )
    table.add_row(
        "module limit ceilings",
        f"memory {settings.max_module_memory_mb} MB, timeout {settings.max_module_timeout_ms} ms,"
        f" concurrency {settings.max_module_concurrency}",
    )
    groups = Cgroups.detect()
    if groups is not None:
        groups.close()
    table.add_row(
        "process-tree limits",
        groups.describe()
        if groups
        else "none: memory and process limits hold per process only (rlimits); give modhub "
        "writable cgroup v1 memory and pids, or a delegated cgroup v2 group",
    )
    table.add_row("modhub", __version__)
    table.add_row("python", f"{platform.python_version()} ({platform.python_implementation()})")
    table.add_row("uv", _version([uv_bin(), "--version"]))
    table.add_row("node", _node())
    table.add_row("esbuild", _esbuild())
    table.add_row(
        "data dir",
        f"{settings.data_dir} ({'exists' if settings.data_dir.exists() else 'not created yet'})",
    )
    table.add_row("database", settings.db_url.split("@")[-1])
    out.print(table)


def _node() -> str:
    """Say which Node.js runs TypeScript/JavaScript handlers, or that none can run."""
    from modhub.sandbox.launch import node_binary

    try:
        node = node_binary()
    except WorkerUnavailable as exc:
        return f"none: {exc} (apt-get install nodejs)"
    return f"{_version([str(node), '--version'])} ({node})"


def _esbuild() -> str:
    """Say which esbuild compiles .ts/.tsx at install, or how to install it."""
    from modhub.lifecycle.environment import InstallError
    from modhub.lifecycle.typescript import esbuild_package, tools_dir

    try:
        package = esbuild_package()
    except InstallError as exc:
        return f"none: {exc}"
    version = json.loads((package / "package.json").read_text()).get("version", "?")
    return f"{version} ({tools_dir()})"


def _version(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError as exc:
        return f"unavailable ({exc})"
    return (
        (result.stdout or result.stderr).strip().splitlines()[0]
        if result.stdout or result.stderr
        else "?"
    )
