"""What a scrape answers: this process's metrics (or, in multi-process mode, every
process's), plus collectors read at scrape time; and the metrics-only listener of
`MODHUB_METRICS_ADDRESS`."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from modhub.errors import ConfigurationError

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
FOLDER = "metrics"  # under the data dir, for `serve --workers N`

# No `_created` series: a third fewer lines a scrape.
disable_created_metrics()  # type: ignore[no-untyped-call]


class _Local(Collector):
    """This process's own metrics (the default registry), as one collector."""

    def collect(self) -> Iterator[Metric]:
        return iter(REGISTRY.collect())


def multiprocess() -> bool:
    """Return whether this process writes its metrics for others to add up."""
    return bool(os.environ.get(MULTIPROCESS_ENV))


def prepare_multiprocess(data_dir: Path) -> Path:
    """Make an empty metrics folder under `data_dir` and point the processes started after
    this call at it (before they import prometheus-client). A previous run's files are
    removed: its counters would otherwise add to this run's."""
    folder = data_dir / FOLDER
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True)
    os.environ[MULTIPROCESS_ENV] = str(folder)
    return folder


def registry(collectors: Iterable[Collector] = ()) -> CollectorRegistry:
    """Return a registry of what a scrape answers: this process's metrics (every
    process's in multi-process mode) and `collectors`."""
    found = CollectorRegistry(auto_describe=False)
    if multiprocess():
        MultiProcessCollector(found)  # type: ignore[no-untyped-call]
    else:
        found.register(_Local())
    for collector in collectors:
        found.register(collector)
    return found


def render(collectors: Iterable[Collector] = ()) -> bytes:
    """Return the text exposition of `registry(collectors)`."""
    return generate_latest(registry(collectors))


def parse_address(address: str) -> tuple[str, int]:
    """Return (host, port) of `host:port` (`[::1]:9464` for IPv6); raise ConfigurationError."""
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigurationError(
            f"MODHUB_METRICS_ADDRESS must be host:port (e.g. 127.0.0.1:9464), not {address!r}"
        )
    return host, int(port)


def serve_address(address: str, collectors: Iterable[Collector] = ()) -> tuple[WSGIServer, Thread]:
    """Serve the metrics without a token on `address` (host:port), in a daemon thread;
    stop it with `server.shutdown()`."""
    host, port = parse_address(address)
    try:
        return start_http_server(port, host, registry=registry(collectors))
    except OSError as exc:
        raise ConfigurationError(
            f"MODHUB_METRICS_ADDRESS {address}: cannot listen: {exc}"
        ) from None
