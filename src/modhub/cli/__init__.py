"""The `modhub` command."""

from modhub.cli.app import app, main

__all__ = ["app", "main"]
