"""An operator's view of a module's store: list its keys, read one, delete one (admin only:
a store may hold what the module's users should not see)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from modhub.api.deps import ServicesDep, require
from modhub.api.problems import responses
from modhub.auth import Permission, Principal
from modhub.errors import InvalidInput, NotFound
from modhub.registry.types import Shape
from modhub.store import Entry, StoreError
from modhub.store.checks import MAX_PAGE, check_key, decode_cursor, encodable

router = APIRouter(prefix="/modules/{name}/store", tags=["store"])
Admin = Annotated[Principal, Depends(require(Permission.MODULES_ADMIN))]
Prefix = Annotated[str, Query(max_length=512, description="Only keys starting with this")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="At most this many keys")]
Cursor = Annotated[
    str | None, Query(max_length=1024, description="The `cursor` of the page before")
]


class StoreEntry(Shape):
    key: str
    value: Any = None
    version: int
    expires_at: datetime | None


class StorePage(Shape):
    items: list[StoreEntry]
    cursor: str | None = None


class Deleted(Shape):
    deleted: bool


def _entry(entry: Entry) -> StoreEntry:
    return StoreEntry(
        key=entry.key, value=entry.value, version=entry.version, expires_at=entry.expires_at
    )


def _checked(field: str, check: Any, value: Any) -> None:
    """Run the store's own `check` on a request field; refuse it naming the field."""
    try:
        check(value)
    except StoreError as exc:
        name = field.split(":")[-1]
        raise InvalidInput(
            f"{name} is invalid: {exc.detail}",
            errors=[{"path": field, "code": f"invalid_{name}", "message": exc.detail}],
        ) from None


def _prefix(prefix: str) -> None:
    if "\x00" in prefix or not encodable(prefix):
        raise StoreError("a prefix is text of valid Unicode without NUL")


def _known(svc: ServicesDep, name: str) -> None:
    svc.registry.get(name)  # 404 for an unknown module


@router.get("", responses=responses(401, 403, 404, 422))
def list_keys(
    name: str,
    svc: ServicesDep,
    _principal: Admin,
    prefix: Prefix = "",
    limit: Limit = 100,
    cursor: Cursor = None,
) -> StorePage:
    """List a module's live keys with their values, in key order, a page at a time."""
    _checked("query:prefix", _prefix, prefix)
    if cursor is not None:
        _checked("query:cursor", decode_cursor, cursor)
    _known(svc, name)
    page = svc.store.list(name, prefix, limit=limit, cursor=cursor)
    return StorePage(items=[_entry(e) for e in page.items], cursor=page.cursor)


@router.get("/{key:path}", responses=responses(401, 403, 404, 422))
def get_key(name: str, key: str, svc: ServicesDep, _principal: Admin) -> StoreEntry:
    """Return one key of a module's store with its value, version and expiry."""
    _checked("path:key", check_key, key)
    _known(svc, name)
    entry = svc.store.get_entry(name, key)
    if entry is None:
        raise NotFound(f"module '{name}' has no key '{key}' in its store", module=name, key=key)
    return _entry(entry)


@router.delete("/{key:path}", responses=responses(401, 403, 404, 422))
def delete_key(name: str, key: str, svc: ServicesDep, _principal: Admin) -> Deleted:
    """Delete one key of a module's store."""
    _checked("path:key", check_key, key)
    _known(svc, name)
    if not svc.store.delete(name, key):
        raise NotFound(f"module '{name}' has no key '{key}' in its store", module=name, key=key)
    return Deleted(deleted=True)
