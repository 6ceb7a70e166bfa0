"""The store as a module service: what a worker's `request.store` calls reach.

The module is the caller's, taken from the channel (`CallerContext.module`), never from the
call's arguments; its quota comes from the calling version's manifest and the operator's
ceiling. Each operation is one short transaction, run off the event loop (writes through
the store's writer, store/writer.py), but for a read of one key on SQLite, which is done on
the loop when that costs less than a thread (store/sqlite.py `LoopReader`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from modhub import metrics
from modhub.sandbox.channel import CallerContext
from modhub.store.errors import InvalidValue
from modhub.store.service import Entry, ModuleStore

QuotaFor = Callable[[str, str], int]
"""`quota(module, version)` → the bytes that module version may keep."""


class StoreService:
    """Answers store calls from module workers."""

    def __init__(self, store: ModuleStore, quota: QuotaFor) -> None:
        self.store = store
        self.quota = quota

    async def handle(self, context: CallerContext, op: str, args: dict[str, Any]) -> Any:
        """Run one store operation for the calling module and return its JSON result."""
        with metrics.store_call(context.module, op):
            awaited = getattr(self, f"_await_{op}", None)
            if awaited is not None:
                return await awaited(context, args)
            operation = getattr(self, f"_op_{op}", None)
            if operation is None:
                raise InvalidValue(f"the store has no operation '{op}'")
            return await asyncio.to_thread(operation, context, args)

    async def _await_get_entry(self, context: CallerContext, args: dict[str, Any]) -> Any:
        entry = await self.store.aget_entry(context.module, args.get("key"))  # type: ignore[arg-type]
        return public(entry)

    async def _await_set(self, context: CallerContext, args: dict[str, Any]) -> int:
        return await self.store.aset(
            context.module,
            args.get("key"),  # type: ignore[arg-type]
            args.get("value"),
            ttl=_number(args, "ttl"),
            if_version=_integer(args, "ifVersion"),
            quota_bytes=self.quota(context.module, context.version),
        )

    async def _await_delete(self, context: CallerContext, args: dict[str, Any]) -> bool:
        return await self.store.adelete(
            context.module,
            args.get("key"),  # type: ignore[arg-type]
            if_version=_integer(args, "ifVersion"),
        )

    def _op_list(self, context: CallerContext, args: dict[str, Any]) -> dict[str, Any]:
        prefix, cursor = args.get("prefix", ""), args.get("cursor")
        if not isinstance(prefix, str) or not (cursor is None or isinstance(cursor, str)):
            raise InvalidValue("prefix and cursor are strings")
        limit = _integer(args, "limit")
        page = self.store.list(
            context.module, prefix, limit=100 if limit is None else limit, cursor=cursor
        )
        return {"items": [public(entry) for entry in page.items], "cursor": page.cursor}

    async def _await_incr(self, context: CallerContext, args: dict[str, Any]) -> int:
        by = _integer(args, "by")
        return await self.store.aincr(
            context.module,
            args.get("key"),  # type: ignore[arg-type]
            1 if by is None else by,
            quota_bytes=self.quota(context.module, context.version),
        )


def public(entry: Entry | None) -> dict[str, Any] | None:
    """Return an entry as the SDK reads it (`modhub.sdk.Entry.of`)."""
    if entry is None:
        return None
    return {
        "key": entry.key,
        "value": entry.value,
        "version": entry.version,
        "expiresAt": entry.expires_at.isoformat() if entry.expires_at else None,
    }


def _integer(args: dict[str, Any], name: str) -> int | None:
    value = args.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidValue(f"'{name}' must be a whole number, not {value!r}")
    return value


def _number(args: dict[str, Any], name: str) -> float | None:
    value = args.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise InvalidValue(f"'{name}' must be a number of seconds, not {value!r}")
    return value  # not float(): an integer too large for a float is the store's to refuse
