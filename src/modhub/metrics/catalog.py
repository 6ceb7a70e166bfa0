"""Every metric modhub exposes, read from the definitions and the collectors themselves:
docs/metrics.md's table is made from this, and a test fails when the two differ."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from modhub.metrics import instruments

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


@dataclass(frozen=True)
class Family:
    """One metric: its name as queried (`_total` on counters), type, labels and help."""

    name: str
    kind: str
    labels: tuple[str, ...]
    help: str
    source: str  # "process" (recorded as it happens) or "database" (read at scrape)

    def series(self) -> tuple[str, ...]:
        """Return the sample names a query may use."""
        base = self.name.removesuffix("_total")
        return tuple(base + suffix for suffix in SUFFIXES[self.kind])


def recorded() -> list[Family]:
    """Return the metrics the processes record (modhub.metrics.instruments)."""
    found = []
    for metric in vars(instruments).values():
        if isinstance(metric, MetricWrapperBase):
            name = metric._name + ("_total" if metric._type == "counter" else "")
            labels = tuple(metric._labelnames)
            kind = str(metric._type)
            found.append(Family(name, kind, labels, metric._documentation, "process"))
    return found


def collected(collectors: Iterable[Collector]) -> list[Family]:
    """Return the metrics `collectors` yield (they read the database)."""
    return [
        Family(
            family.name,
            family.type,
            tuple(getattr(family, "_labelnames", ())),
            family.documentation,
            "database",
        )
        for collector in collectors
        for family in collector.collect()
    ]


def markdown(families: Iterable[Family]) -> str:
    """Return the table of docs/metrics.md."""
    lines = [
        "| metric | type | labels | source | what it counts |",
        "| --- | --- | --- | --- | --- |",
    ]
    for family in sorted(families, key=lambda f: f.name):
        labels = ", ".join(f"`{label}`" for label in family.labels) or "none"
        lines.append(
            f"| `{family.name}` | {family.kind} | {labels} | {family.source} | {family.help} |"
        )
    return "\n".join(lines) + "\n"
