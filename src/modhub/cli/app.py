"""The `modhub` Typer application and its manifest commands."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from modhub import __version__

if TYPE_CHECKING:
    from modhub.manifest import ValidationResult
    from modhub.settings import Settings

# Every `modhub` command pays this module's imports and those of the other modules of
# modhub.cli, `modhub --help` too: what only some commands use (the manifest's models,
# pydantic-settings, SQLAlchemy, FastAPI, the services) is imported in those commands.
# tests/cli/test_imports.py holds the line.

app = typer.Typer(
    name="modhub",
    help="modhub: the module system of an automation platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True)


def version_callback(value: bool) -> None:
    """Print the version and stop."""
    if value:
        out.print(f"modhub {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Validate, register, install and run automation modules."""


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="A module.json file or a module folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Validate a manifest; exit 0 when valid, 1 when not.

    As the server does: MODHUB_PIP_ALLOW_DIRECT_REFERENCES decides whether URL and VCS
    requirements are accepted.
    """
    from modhub.manifest import validate_path

    result = validate_path(path, allow_direct_references=_allow_direct_references())
    if result.valid and path.is_dir():
        result = _check_node_handlers(path, result)
    if as_json:
        typer.echo(json.dumps(result.public(), indent=2))
    else:
        _print_result(path, result)
    raise typer.Exit(0 if result.valid else 1)


def _check_node_handlers(folder: Path, result: ValidationResult) -> ValidationResult:
    """Add what esbuild finds in the folder's TypeScript and JavaScript handlers: a syntax
    error (file:line:column) or a function not exported (a warning when it cannot run)."""
    from modhub.lifecycle import typescript
    from modhub.lifecycle.environment import InstallError
    from modhub.manifest import Manifest, ValidationResult, load_manifest
    from modhub.manifest.result import Issue

    manifest = Manifest.model_validate(load_manifest(folder))
    if not typescript.node_handlers(manifest):
        return result
    try:
        found = typescript.check_handlers(manifest, folder)
    except InstallError as exc:
        warning = Issue(
            path="", code="handlers_not_checked", message=exc.detail, severity="warning"
        )
        return ValidationResult(errors=result.errors, warnings=[*result.warnings, warning])
    return ValidationResult(errors=[*result.errors, *found], warnings=result.warnings)


@app.command()
def schema() -> None:
    """Print the JSON Schema of module.json (for editors: name it in "$schema")."""
    from modhub.manifest.schema import render_schema

    typer.echo(render_schema(), nl=False)


def _allow_direct_references() -> bool:
    """Return MODHUB_PIP_ALLOW_DIRECT_REFERENCES, read from the environment as the server
    reads it (an invalid value stops the command, naming the variable)."""
    return load_settings().pip_allow_direct_references


def load_settings(**options: Any) -> Settings:
    """Return the settings from the environment, with the command line's `options` (None:
    not given) over them; on an invalid one, print a line naming each invalid setting (the
    option when it came from the command line, else its variable) and exit 2."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from modhub.settings import Settings

    given = {name: value for name, value in options.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            field = str(error["loc"][0]) if error["loc"] else "?"
            name, message = _setting(field, given), error["msg"]
            err.print(f"[red]error:[/] {escape(name)}: {escape(message)}", soft_wrap=True)
    except SettingsError as exc:  # a list or JSON setting that does not parse
        found = re.search(r'field "(\w+)"', str(exc))
        field = found.group(1) if found else "?"
        name = _setting(field, given)
        err.print(f"[red]error:[/] {escape(name)}: not valid JSON", soft_wrap=True)
    raise typer.Exit(2)


def _setting(field: str, given: dict[str, Any]) -> str:
    """Return how the user set a setting: its command-line option, or its variable."""
    return f"--{field.replace('_', '-')}" if field in given else f"MODHUB_{field.upper()}"


def _print_result(path: Path, result: ValidationResult) -> None:
    for issue in result.errors:
        out.print(
            f"[red]error[/]   {escape(issue.path or '/')}  "
            f"[dim]{issue.code}[/]  {escape(issue.message)}"
        )
    for issue in result.warnings:
        out.print(
            f"[yellow]warning[/] {escape(issue.path or '/')}  "
            f"[dim]{issue.code}[/]  {escape(issue.message)}"
        )
    if result.valid:
        note = f" with {len(result.warnings)} warning(s)" if result.warnings else ""
        out.print(f"[green]✓[/] {escape(str(path))} is a valid manifest{note}")
    else:
        out.print(
            f"[red]✗[/] {escape(str(path))}: {len(result.errors)} error(s), "
            f"{len(result.warnings)} warning(s)"
        )


def main() -> None:
    """Run the `modhub` command."""
    app()
