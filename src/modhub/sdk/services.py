"""Module services: the module's own key-value store and calls to the modules it depends on.

Every call travels over the worker's channel to the server (module code never gets a
database connection or a credential); the server knows which module asks from the
channel itself. Each method has an awaitable twin with an `a` prefix for `async`
handlers: `await request.store.aget(key)`.
"""

from __future__ import annotations

import base64
import json as _json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modhub.sdk.types import Response

Transport = Callable[[str, str, dict[str, Any]], Any]
"""`transport(service, op, args)` → the server's result (raises the service's errors)."""
AsyncTransport = Callable[[str, str, dict[str, Any]], Awaitable[Any]]


class ServiceError(Exception):
    """A module service refused a call or could not be reached."""


class StoreError(ServiceError):
    """The store refused an operation; nothing was changed."""


class VersionConflict(StoreError):
    """`if_version` did not match the key's current version."""


class QuotaExceeded(StoreError):
    """The write would take the module past its storage limit (the message names both)."""


class ValueTooLarge(StoreError):
    """The value is larger than the largest value allowed (1 MiB as JSON)."""


class InvalidKey(StoreError):
    """The key is empty, not a string, or longer than 512 bytes."""


class InvalidValue(StoreError):
    """The value is not JSON, or an argument (ttl, limit, cursor, a non-integer for incr)
    is out of range."""


class CallRefused(ServiceError):
    """The platform refused a call to another module; the message says why."""


class EventInvalid(ServiceError):
    """The platform refused to emit an event: its name is not declared in the manifest's
    `capabilities.events.emits`, or its payload breaks the declared schema (the message
    names the field). Nothing was emitted."""


ERRORS: dict[str, type[ServiceError]] = {
    cls.__name__: cls
    for cls in (
        ServiceError,
        StoreError,
        VersionConflict,
        QuotaExceeded,
        ValueTooLarge,
        InvalidKey,
        InvalidValue,
        CallRefused,
        EventInvalid,
    )
}


@dataclass(frozen=True)
class Entry:
    """One stored key: its value, its version (1 on the first set) and when it expires."""

    key: str
    value: Any
    version: int
    expires_at: datetime | None = None

    @classmethod
    def of(cls, data: dict[str, Any]) -> Entry:
        expires = data.get("expiresAt")
        return cls(
            data["key"],
            data["value"],
            int(data["version"]),
            datetime.fromisoformat(expires) if expires else None,
        )


@dataclass(frozen=True)
class Page:
    """A page of entries in key order; pass `cursor` to `list` for the next one."""

    items: list[Entry]
    cursor: str | None = None

    @classmethod
    def of(cls, data: dict[str, Any]) -> Page:
        return cls([Entry.of(item) for item in data["items"]], data.get("cursor"))


_MISSING = object()


def _unavailable(service: str, op: str, args: dict[str, Any]) -> Any:
    raise ServiceError(f"module services ({service}) are only available to handlers in a worker")


async def _aunavailable(service: str, op: str, args: dict[str, Any]) -> Any:
    return _unavailable(service, op, args)


class Store:
    """The module's own key-value store. Values are any JSON; keys are non-empty strings
    of at most 512 bytes. It is not a secrets vault: secrets belong in the module's config."""

    def __init__(
        self, transport: Transport = _unavailable, atransport: AsyncTransport = _aunavailable
    ) -> None:
        self._call = transport
        self._acall = atransport

    @classmethod
    def in_memory(cls) -> Store:
        """Return a store kept in this process, with the platform store's rules (versions,
        `if_version`, ttl, key order, the 512-byte key and 1 MiB value limits): for tests."""
        memory = _Memory()

        async def acall(service: str, op: str, args: dict[str, Any]) -> Any:
            return memory(service, op, args)

        return cls(memory, acall)

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value of `key`, or `default` when it is absent or expired."""
        entry = self.get_entry(key)
        return default if entry is None else entry.value

    def get_entry(self, key: str) -> Entry | None:
        """Return the entry of `key` (value, version, expiry), or None."""
        found = self._call("store", "get_entry", {"key": key})
        return None if found is None else Entry.of(found)

    def set(
        self, key: str, value: Any, *, ttl: float | None = None, if_version: int | None = None
    ) -> int:
        """Store `value` under `key` and return its new version. `ttl` in seconds;
        `if_version=0`: only if absent; `if_version=N`: only if its version is N."""
        return int(self._call("store", "set", _set_args(key, value, ttl, if_version)))

    def delete(self, key: str, *, if_version: int | None = None) -> bool:
        """Delete `key`; return whether it existed."""
        return bool(self._call("store", "delete", {"key": key, "ifVersion": if_version}))

    def list(self, prefix: str = "", *, limit: int = 100, cursor: str | None = None) -> Page:
        """Return up to `limit` entries whose keys start with `prefix`, in key order."""
        args = {"prefix": prefix, "limit": limit, "cursor": cursor}
        return Page.of(self._call("store", "list", args))

    def incr(self, key: str, by: int = 1) -> int:
        """Add `by` to the integer under `key` (absent: 0) atomically; return the new value."""
        return int(self._call("store", "incr", {"key": key, "by": by}))

    async def aget(self, key: str, default: Any = None) -> Any:
        """`get`, awaitable."""
        entry = await self.aget_entry(key)
        return default if entry is None else entry.value

    async def aget_entry(self, key: str) -> Entry | None:
        """`get_entry`, awaitable."""
        found = await self._acall("store", "get_entry", {"key": key})
        return None if found is None else Entry.of(found)

    async def aset(
        self, key: str, value: Any, *, ttl: float | None = None, if_version: int | None = None
    ) -> int:
        """`set`, awaitable."""
        return int(await self._acall("store", "set", _set_args(key, value, ttl, if_version)))

    async def adelete(self, key: str, *, if_version: int | None = None) -> bool:
        """`delete`, awaitable."""
        return bool(await self._acall("store", "delete", {"key": key, "ifVersion": if_version}))

    async def alist(self, prefix: str = "", *, limit: int = 100, cursor: str | None = None) -> Page:
        """`list`, awaitable."""
        args = {"prefix": prefix, "limit": limit, "cursor": cursor}
        return Page.of(await self._acall("store", "list", args))

    async def aincr(self, key: str, by: int = 1) -> int:
        """`incr`, awaitable."""
        return int(await self._acall("store", "incr", {"key": key, "by": by}))


_TTL = 100 * 365 * 24 * 3600  # the platform store's longest ttl (modhub.store.checks.MAX_TTL)


class _Memory:
    """The store's rules on a dict: what `Store.in_memory()` runs on."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def __call__(self, service: str, op: str, args: dict[str, Any]) -> Any:
        key = args.get("key", "")
        if op != "list" and (not isinstance(key, str) or not key or len(key.encode()) > 512):
            raise InvalidKey(f"a key is a non-empty string of at most 512 bytes, not {key!r}")
        now = time.time()
        self.data = {k: e for k, e in self.data.items() if not e["expires"] or e["expires"] > now}
        entry = self.data.get(key)
        if op == "get_entry":
            return entry and _public(entry)
        if op == "list":
            keys = sorted(k for k in self.data if k.startswith(args.get("prefix", "")))
            keys = [k for k in keys if args.get("cursor") is None or k > args["cursor"]]
            page = keys[: args.get("limit", 100)]
            more = len(keys) > len(page)
            return {
                "items": [_public(self.data[k]) for k in page],
                "cursor": page[-1] if more else None,
            }
        expected = args.get("ifVersion")
        if expected is not None and (entry["version"] if entry else 0) != expected:
            raise VersionConflict(f"'{key}' is not at version {expected}")
        if op == "delete":
            return self.data.pop(key, None) is not None
        value, ttl = args.get("value"), args.get("ttl")
        expires = now + ttl if isinstance(ttl, int | float) else None
        if ttl is not None and (isinstance(ttl, bool) or expires is None or not 0 < ttl <= _TTL):
            raise InvalidValue(f"ttl must be a number of seconds above 0, at most {_TTL}: {ttl!r}")
        if op == "incr":
            old = entry["value"] if entry else 0
            if isinstance(old, bool) or not isinstance(old, int):
                raise InvalidValue(f"'{key}' does not hold a whole number, so incr cannot add")
            value = old + int(args.get("by", 1))
            expires = entry["expires"] if entry else None  # incr keeps the key's ttl
        if len(_json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()) > 1 << 20:
            raise ValueTooLarge(f"the value of '{key}' is larger than 1 MiB")
        version = (entry["version"] if entry else 0) + 1
        self.data[key] = {"key": key, "value": value, "version": version, "expires": expires}
        return value if op == "incr" else version


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    expires = entry["expires"]
    return {
        "key": entry["key"],
        "value": entry["value"],
        "version": entry["version"],
        "expiresAt": datetime.fromtimestamp(expires, UTC).isoformat() if expires else None,
    }


def _set_args(key: str, value: Any, ttl: float | None, if_version: int | None) -> dict[str, Any]:
    try:
        _json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidValue(f"the value of '{key}' is not JSON: {exc}") from None
    return {"key": key, "value": value, "ttl": ttl, "ifVersion": if_version}


class ModuleCalls:
    """Calls to routes of the modules this module lists in `dependencies.modules`."""

    def __init__(
        self, transport: Transport = _unavailable, atransport: AsyncTransport = _aunavailable
    ) -> None:
        self._call = transport
        self._acall = atransport

    def call(
        self,
        module: str,
        method: str,
        path: str,
        *,
        json: Any = _MISSING,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Call `method path` of `module` as the user of this request (in a job: as this
        module) and return its Response; raise CallRefused when the platform refuses."""
        args = _call_args(module, method, path, json, query, headers)
        return _response(self._call("modules", "call", args))

    async def acall(
        self,
        module: str,
        method: str,
        path: str,
        *,
        json: Any = _MISSING,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """`call`, awaitable."""
        args = _call_args(module, method, path, json, query, headers)
        return _response(await self._acall("modules", "call", args))


def _call_args(
    module: str,
    method: str,
    path: str,
    json: Any,
    query: dict[str, Any] | None,
    headers: dict[str, str] | None,
) -> dict[str, Any]:
    args: dict[str, Any] = {
        "module": module,
        "method": method.upper(),
        "path": path,
        "query": {
            k: [str(x) for x in (v if isinstance(v, list) else [v])]
            for k, v in (query or {}).items()
        },
        "headers": dict(headers or {}),
    }
    if json is not _MISSING:
        args["json"] = json
    return args


def _response(answer: dict[str, Any]) -> Response:
    body = base64.b64decode(answer.get("body") or "")
    content_type = answer.get("contentType") or "application/octet-stream"
    parsed: Any = None
    if content_type.startswith("application/json") and body:
        parsed = _json.loads(body)
    return Response(
        status=int(answer["status"]),
        json=parsed,
        body=body,
        headers=dict(answer.get("headers") or {}),
        content_type=content_type,
    )
