"""What `modhub` imports before it runs a command: every command, `modhub --help` too, pays
modhub.cli's imports, so the server's (FastAPI, SQLAlchemy, uvicorn, the services) belong in
the commands that open them. Checked in a fresh interpreter, by module name, never by time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# What a server command imports and a client command, or --help, must not pay for.
HEAVY = (
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "asyncpg",
    "prometheus_client",
    "modhub.services",
    "modhub.api",
    "modhub.db",
    "modhub.events",
    "modhub.jobs",
    "modhub.registry",
    "modhub.lifecycle",
    "modhub.sandbox",
    "modhub.metrics",
    "modhub.telemetry",
    "modhub.backup",
)

# Run `modhub ARGV` as the console script does (modhub.cli:main, pyproject.toml), then write
# the names of the imported modules to the file named by the first argument.
PROBE = """
import json, sys
found, argv = sys.argv[1], sys.argv[2:]
try:
    if argv == ["--import-only"]:
        {imports}
    else:
        from modhub.cli import main
        sys.argv = ["modhub", *argv]
        main()
except SystemExit:
    pass
finally:
    with open(found, "w") as out:
        json.dump(sorted(sys.modules), out)
"""


def imported(tmp_path: Path, *argv: str, imports: str = "import modhub.cli") -> list[str]:
    """Return the modules a fresh interpreter holds after `modhub ARGV`."""
    found = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODHUB_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(imports=imports), str(found), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    names: list[str] = json.loads(found.read_text())
    return names


def heavy(modules: list[str]) -> list[str]:
    """Return the modules of HEAVY (or in their packages) among `modules`."""
    return [m for m in modules if any(m == root or m.startswith(root + ".") for root in HEAVY)]


@pytest.mark.parametrize(
    "argv",
    [
        ["--import-only"],  # `import modhub.cli`, as `python -m modhub` starts
        ["--help"],
        ["--version"],
        ["module", "--help"],
        ["events", "list", "--help"],
        ["cluster", "nodes", "--help"],
        ["serve", "--help"],
        ["db", "upgrade", "--help"],
    ],
    ids=" ".join,
)
def test_the_command_line_starts_without_the_server(tmp_path: Path, argv: list[str]) -> None:
    modules = imported(tmp_path, *argv)

    assert "modhub.cli.admin" in modules  # every command is registered
    assert heavy(modules) == []


def test_a_client_command_imports_httpx_and_not_the_server(tmp_path: Path) -> None:
    # Nothing listens on port 1: the request fails (exit 2) once httpx is imported.
    modules = imported(tmp_path, "events", "list", "--url", "http://127.0.0.1:1", "--token", "t")

    assert "httpx" in modules
    assert heavy(modules) == []


def test_the_probe_sees_the_servers_imports(tmp_path: Path) -> None:
    # The services import FastAPI and SQLAlchemy: were the probe blind, the tests above
    # would pass whatever modhub.cli imported.
    modules = imported(tmp_path, "--import-only", imports="import modhub.services")

    assert {"fastapi", "sqlalchemy", "modhub.services"} <= set(heavy(modules))


@pytest.mark.parametrize("example", ["hello", "vmware-vcenter-ts"])
def test_validate_checks_a_folder_without_the_server(tmp_path: Path, example: str) -> None:
    # A TypeScript folder's handlers are checked with esbuild (lifecycle.typescript): that
    # much of the lifecycle, and not its service, the database or the settings' SQLAlchemy.
    folder = Path(__file__).parents[2] / "examples" / "modules" / example
    modules = imported(tmp_path, "validate", str(folder))

    assert "modhub.manifest" in modules
    server = [m for m in heavy(modules) if not m.startswith(("modhub.lifecycle", "modhub.sandbox"))]
    assert server == []
    assert "modhub.lifecycle.service" not in modules
    assert "modhub.sandbox.pool" not in modules
