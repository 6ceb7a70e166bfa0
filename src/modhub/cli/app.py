"""The `modhub` Typer application and its manifest commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from modhub import __version__
from modhub.manifest import ValidationResult, validate_path
from modhub.manifest.schema import render_schema

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
    """Validate a manifest; exit 0 when valid, 1 when not."""
    result = validate_path(path)
    if as_json:
        typer.echo(json.dumps(result.public(), indent=2))
    else:
        _print_result(path, result)
    raise typer.Exit(0 if result.valid else 1)


@app.command()
def schema() -> None:
    """Print the JSON Schema of module.json (for editors: name it in "$schema")."""
    typer.echo(render_schema(), nl=False)


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
