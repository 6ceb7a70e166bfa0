"""Keep the route table and the workers in step with the registry.

In this process, every committed registry change refreshes that module's routes at once
(a registry listener). Other processes sharing the database wake the sync at once on
PostgreSQL (`modhub.cluster.notify`); as a fallback, a poller compares a fingerprint of
the modules table every second and reloads the table when it moves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress

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
        self._woken: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def load(self) -> RouteTable:
        """Build the whole table from the registry and serve it."""
        self._fingerprint = self.registry.fingerprint()
        self.configs.forget_all()  # a config may have changed with the rest
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

    def wake(self) -> None:
        """Reload the table now: another process changed the registry (safe from any thread).

        Wakes that come during a reload cause one more reload, not one each.
        """
        woken = self._woken
        if woken is not None:
            loop, event = woken
            loop.call_soon_threadsafe(event.set)

    async def poll(self, interval: float = 1.0) -> None:
        """Reload the table when woken, or when a poll every `interval` seconds finds that
        another process changed the registry (the fallback for a wake that never came)."""
        event = asyncio.Event()
        self._woken = (asyncio.get_running_loop(), event)
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), interval)
            woken = event.is_set()
            event.clear()
            try:
                if woken:
                    await asyncio.to_thread(self.load)
                    continue
                seen = await asyncio.to_thread(self.registry.fingerprint)
                if seen != self._fingerprint:
                    await asyncio.to_thread(self.load)
            except Exception:  # keep polling through a database hiccup
                log.exception("route table refresh failed")


def _served(table: RouteTable) -> dict[str, str]:
    return {name: routes.version for name, routes in table.items()}
