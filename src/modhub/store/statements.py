"""The store's SQL statements, each built once with bound parameters (used by service.py;
the one-key statements on SQLite are in sqlite.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from modhub.db.models import StoredValue, StoreUsage

_S = StoredValue.__table__.c
_U = StoreUsage.__table__.c
_MODULE: BindParameter[str] = bindparam("module")
_KEY: BindParameter[str] = bindparam("key")
_NOW: BindParameter[datetime] = bindparam("now")
_LIVE = or_(_S.expires_at.is_(None), _S.expires_at > _NOW)
_EXPIRED = and_(_S.module == _MODULE, _S.expires_at <= _NOW)
_THIS = and_(_S.module == _MODULE, _S.key == _KEY)
_ENTRY = (_S.key, _S.value, _S.version, _S.expires_at)

GET = select(*_ENTRY).where(_THIS, _LIVE)
GONE = select(func.count(), func.coalesce(func.sum(_S.size), 0)).where(_EXPIRED)
USAGE = select(
    _U["keys"] - GONE.with_only_columns(func.count()).scalar_subquery(),
    _U.bytes - GONE.with_only_columns(func.coalesce(func.sum(_S.size), 0)).scalar_subquery(),
).where(_U.module == _MODULE)
LOCK = select(_U["keys"], _U.bytes).where(_U.module == _MODULE).with_for_update()
MAKE_USAGE = {
    dialect.__name__.rsplit(".", 1)[-1]: dialect.insert(StoreUsage)
    .values(module=_MODULE, keys=0, bytes=0)
    .on_conflict_do_nothing()
    for dialect in (postgresql, sqlite)
}
ROW = select(_S.version, _S.size, _S.expires_at).where(_THIS)
ROW_VALUE = ROW.add_columns(_S.value)
DELETE = delete(StoredValue).where(_THIS)
GONE_BUT = GONE.where(_S.key != _KEY)
DELETE_EXPIRED = delete(StoredValue).where(_EXPIRED, _S.key != _KEY)
DELETE_ALL = delete(StoredValue).where(_S.module == _MODULE)
SET_USAGE = update(StoreUsage).where(_U.module == bindparam("m"))
_WRITTEN = ("value", "size", "version", "expires_at", "updated_at")
_UPSERT = postgresql.insert(StoredValue).values(
    module=bindparam("m"), key=bindparam("k"), **{name: bindparam(name) for name in _WRITTEN}
)
# PostgreSQL: the key's row and the usage in one statement, one round trip fewer.
PUT_PG = SET_USAGE.values(keys=bindparam("keys"), bytes=bindparam("bytes")).add_cte(
    _UPSERT.on_conflict_do_update(
        index_elements=[_S.module, _S.key],
        set_={name: _UPSERT.excluded[name] for name in _WRITTEN},
    ).cte("written")
)
EXPIRING_MODULES = select(_S.module).where(_S.expires_at <= _NOW).distinct()


def _page(lower: Any, upper: bool) -> Any:
    query = select(*_ENTRY).where(_S.module == _MODULE, _LIVE, lower)
    if upper:
        query = query.where(_S.key < bindparam("high"))
    return query.order_by(_S.key).limit(bindparam("limit"))


# (starts after a cursor, has an upper bound) → its statement; without a cursor the lower
# bound is the prefix itself, inclusive
LIST = {
    (after, upper): _page(
        _S.key > bindparam("after") if after else _S.key >= bindparam("low"), upper
    )
    for after in (False, True)
    for upper in (False, True)
}
