"""`MODHUB_METRICS_ADDRESS`: the metrics served without a token on their own address (a
loopback port for a Prometheus beside the server), started by `modhub serve`."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from modhub.db import Database
from modhub.metrics.collector import DatabaseCollector
from modhub.metrics.exposition import prepare_multiprocess, serve_address
from modhub.settings import Settings


def listen(settings: Settings, db: Database | None = None) -> WSGIServer | None:
    """Serve the metrics on `settings.metrics_address` (None when unset or metrics are off),
    reading the database through `db` (else a connection pool of its own)."""
    if not settings.metrics or not settings.metrics_address:
        return None
    server, _thread = serve_address(
        settings.metrics_address, [DatabaseCollector(db or Database(settings.db_url))]
    )
    return server


def prepare_workers(settings: Settings) -> None:
    """Before `serve --workers N` starts its processes: have them write their metrics into
    an emptied folder of the data dir, which every scrape adds up (multi-process mode)."""
    if settings.metrics:
        prepare_multiprocess(settings.data_dir)
