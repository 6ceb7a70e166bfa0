"""The `modhub` command."""

from modhub.cli import admin, client
from modhub.cli.app import app, main

__all__ = ["admin", "app", "client", "main"]
