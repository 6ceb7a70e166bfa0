"""A module's detail with its caller and its store's use, in one statement (PostgreSQL).

The module detail endpoint reads three things a request: who calls (on every request, so
a revoked token or a lost permission is refused at once), the module's detail (unless the
read cache holds it) and its store's use (never cached). Each statement was a round trip
and a thread's wait for the GIL on its way back; read as one, a detail costs one.

The caller's row drives the statement: without it (no such user or live token) there is
no row at all. The detail and the store's use are joined to it laterally, so they are
NULL for a module that does not exist; the caller is checked before anything of the
module is used (refused with 401 or 403 even for a module that does not exist).
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Row, Select, select, true

from modhub.auth.service import CALLER_ROW, Credential
from modhub.registry.rows import DETAIL_AGGREGATED
from modhub.store import statements as store_sql

# The store use's two columns, named (the store's statement leaves them anonymous).
_USAGE = store_sql.USAGE.with_only_columns(
    *(
        column.label(name)
        for column, name in zip(
            store_sql.USAGE.selected_columns, ("store_keys", "store_bytes"), strict=True
        )
    )
).lateral("usage")


@cache
def statement(api_token: bool, with_detail: bool) -> Select[Any]:
    """Return the statement reading the caller (by API token or user name), the store's
    use and, `with_detail`, the module's detail (DETAIL_AGGREGATED's columns).

    Parameters: the credential's, `name` (the module) and `now` (the store's clock).
    Built once each: building a statement costs SQLAlchemy more than running it.
    """
    caller = CALLER_ROW[api_token].subquery("caller")
    joined = caller.outerjoin(_USAGE, true())
    columns: list[Any] = [*caller.c, *_USAGE.c]
    if with_detail:
        detail = DETAIL_AGGREGATED.lateral("detail")
        joined = joined.outerjoin(detail, true())
        columns += list(detail.c)
    return select(*columns).select_from(joined)


def read(
    connection: Connection,
    credential: Credential,
    name: str,
    now: datetime,
    with_detail: bool,
) -> Row[Any] | None:
    """Return the caller's row with module `name`'s store use and, `with_detail`, its
    detail (its `id` is None when there is no such module), or None without a caller."""
    params = {**credential.params, "name": name, "module": name, "now": now}
    found = connection.execute(statement(credential.api_token, with_detail), params)
    row: Row[Any] | None = found.first()
    return row
