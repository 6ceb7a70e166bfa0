"""Keep the route table and the workers in step with the registry.

In this process, every committed registry change refreshes that module's routes at once
(a registry listener). Other processes sharing the database notice within a second: a
poller compares a fingerprint of the modules table and reloads the table when it moves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from modhub.registry import Registry
from modhub.routes.dispatch import ModuleConfigs
from modhub.routes.table import RouteTable, RouteTableHolder, RuntimeFor, load_table, refresh_module

log = logging.getLogger("modhub.routes")
Retire = Callable[[dict[str, str]], None]


class RouteSync:
    """Refreshes routes on registry changes, here and from other processes."""

    def __init__(
        self,
        registry: Registry,
        holder: RouteTableHolder,
        configs: ModuleConfigs,
        runtime_for: RuntimeFor,
        retire: Retire,
    ) -> None:
        self.registry = registry
        self.holder = holder
        self.configs = configs
        self.runtime_for = runtime_for
        self.retire = retire
        self._fingerprint: tuple[int, str] | None = None

    def load(self) -> RouteTable:
        """Build the whole table from the registry and serve it."""
        self._fingerprint = self.registry.fingerprint()
        # Built under the writers' lock: a reload that read the registry before a change
        # cannot swap in after the listener that saw the change.
        # UPDATING modules keep their old version's routes, as `refresh_module` does.
        table = self.holder.update(lambda old: load_table(self.registry, self.runtime_for, old))
        self.retire(_served(table))
        return table

    def on_change(self, name: str) -> None:
        """Registry listener: serve `name` as the registry says now."""
        self.configs.forget(name)
        table = refresh_module(self.holder, self.registry, name, self.runtime_for)
        self.retire(_served(table))

    async def poll(self, interval: float = 1.0) -> None:
        """Reload the table whenever another process changed the registry."""
        while True:
            await asyncio.sleep(interval)
            try:
                seen = await asyncio.to_thread(self.registry.fingerprint)
                if seen != self._fingerprint:
                    await asyncio.to_thread(self.load)
            except Exception:  # keep polling through a database hiccup
                log.exception("route table refresh failed")


def _served(table: RouteTable) -> dict[str, str]:
    return {name: routes.version for name, routes in table.items()}
