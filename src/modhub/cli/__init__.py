"""The `modhub` command."""

from modhub.cli import admin, authoring, backup, client, cluster, doctor, events, store
from modhub.cli.app import app, main

__all__ = [
    "admin",
    "app",
    "authoring",
    "backup",
    "client",
    "cluster",
    "doctor",
    "events",
    "main",
    "store",
]
