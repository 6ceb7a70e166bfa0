"""The `modhub` command."""

from modhub.cli import admin, client, cluster, doctor, store
from modhub.cli.app import app, main

__all__ = ["admin", "app", "client", "cluster", "doctor", "main", "store"]
