"""The `modhub` command."""

from modhub.cli import admin, client, doctor, store
from modhub.cli.app import app, main

__all__ = ["admin", "app", "client", "doctor", "main", "store"]
