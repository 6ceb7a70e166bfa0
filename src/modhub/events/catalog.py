"""Who emits what and who subscribes to what, read from the registry's active manifests.

The catalog is rebuilt when the registry's fingerprint moves (any module registered,
upgraded, enabled, disabled or removed, on any node), so an emit on one node fans out to
the subscribers the database knows, whatever this node has loaded.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs
from sqlalchemy import select

from modhub.db import Database
from modhub.db.models import Module, ModuleVersion
from modhub.manifest.model import Capabilities, Subscription
from modhub.manifest.subscriptions import split_ref
from modhub.registry import Registry


@dataclass(frozen=True)
class Subscriber:
    """One module's subscription to one event, as its active version declares it."""

    module: str
    version: str
    status: str
    has_code: bool
    subscription: Subscription


@dataclass
class Catalog:
    """Subscribers by `source/name`, and each module's active version and declared events."""

    fingerprint: tuple[int, str] | None = None
    subscribers: dict[str, list[Subscriber]] = field(default_factory=dict)
    by_module: dict[str, dict[str, Subscriber]] = field(default_factory=dict)
    emits: dict[str, set[str]] = field(default_factory=dict)

    def subscription(self, module: str, ref: str) -> Subscriber | None:
        """Return `module`'s subscription to `ref` (`source/name`), or None."""
        return self.by_module.get(module, {}).get(ref)


def read_catalog(db: Database, fingerprint: tuple[int, str] | None) -> Catalog:
    """Return the catalog of every registered module's active version."""
    catalog = Catalog(fingerprint=fingerprint)
    query = select(
        Module.name, Module.status, Module.version, ModuleVersion.manifest, ModuleVersion.path
    ).join(
        ModuleVersion,
        (ModuleVersion.module_id == Module.id) & (ModuleVersion.version == Module.version),
    )
    with db.read() as session:
        rows = session.execute(query).all()
    for name, status, version, manifest, path in rows:
        events = Capabilities.model_validate(manifest.get("capabilities") or {}).events
        catalog.emits[name] = {e.name for e in events.emits}
        for subscription in events.subscribes:
            subscriber = Subscriber(name, version, status, path is not None, subscription)
            catalog.subscribers.setdefault(subscription.event, []).append(subscriber)
            catalog.by_module.setdefault(name, {})[subscription.event] = subscriber
    return catalog


class Catalogs:
    """The current catalog, re-read when the registry's fingerprint moves (thread-safe).

    The fingerprint is asked at most every `max_age` seconds (an emit must not pay for a
    registry read each time); a change on this node (a registry listener) or a node's
    notification (PostgreSQL) calls `invalidate`, so only a change on another node whose
    notification is lost waits up to `max_age`.
    """

    def __init__(self, registry: Registry, max_age: float = 0.5) -> None:
        self.registry = registry
        self.max_age = max_age
        self._catalog = Catalog()
        self._checked = -math.inf
        self._lock = threading.Lock()

    def invalidate(self, *_: object) -> None:
        """Ask the registry again on the next `current` (safe from any thread)."""
        self._checked = -math.inf

    def fresh(self) -> Catalog | None:
        """Return the catalog when `current` would without asking the registry, else None
        (for the event loop, which must not wait for the database)."""
        if time.monotonic() - self._checked < self.max_age:
            return self._catalog
        return None

    def current(self) -> Catalog:
        """Return the catalog as the registry is now."""
        now = time.monotonic()
        catalog = self._catalog
        if now - self._checked < self.max_age:
            return catalog
        fingerprint = self.registry.fingerprint()
        self._checked = now
        if catalog.fingerprint == fingerprint:
            return catalog
        with self._lock:
            if self._catalog.fingerprint != fingerprint:
                self._catalog = read_catalog(self.registry.db, fingerprint)
            return self._catalog


class Schemas:
    """Compiled payload schemas of the events a module version declares (versions never
    change, so a compiled validator is kept for good, up to a bound)."""

    def __init__(self, registry: Registry, limit: int = 1024) -> None:
        self.registry = registry
        self.limit = limit
        self._validators: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def cached(self, module: str, version: str) -> dict[str, Any] | None:
        """Return the validators of `module` at `version` when compiled already, else None."""
        return self._validators.get((module, version))

    def declared(self, module: str, version: str) -> dict[str, Any]:
        """Return the validators of the events `module` at `version` declares, by name."""
        key = (module, version)
        found = self._validators.get(key)
        if found is not None:
            return found
        manifest, _ = self.registry.version_info(module, version)
        validators = {
            e.name: jsonschema_rs.validator_for(e.schema_)
            for e in manifest.capabilities.events.emits
        }
        with self._lock:
            if len(self._validators) >= self.limit:
                self._validators.clear()
            self._validators[key] = validators
        return validators


def source_of(ref: str) -> str:
    """Return the emitting module of an event reference `source/name`."""
    return split_ref(ref)[0]
