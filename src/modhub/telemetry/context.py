"""Request-scoped fields (request id, user, module, route, status) for log records.

The API's middleware (`telemetry/middleware.py`) opens one dict per request in a context
variable; code anywhere below adds to it with `note(...)`. The dict itself is shared, so a
field noted in a worker thread (`run_in_threadpool` and `asyncio.to_thread` copy the
context, which still points at the same dict) is seen by the request's own log lines.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

REQUEST_ID_HEADER = "X-Request-Id"
# An incoming X-Request-ID is kept only when it is short and plain: it is written into
# logs, problem documents and a response header, so no spaces, quotes or control characters.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_fields: ContextVar[dict[str, Any] | None] = ContextVar("modhub_request_fields", default=None)


def request_id_from(header: str | None) -> str:
    """Return the caller's request id if it is safe to reuse, else a new UUID."""
    if header is not None and _SAFE_ID.fullmatch(header):
        return header
    return str(uuid.uuid4())


def current() -> dict[str, Any]:
    """Return the fields of the request (or job run) being served; empty outside one."""
    return _fields.get() or {}


def request_id() -> str | None:
    """Return the id of the request being served, if any."""
    found = current().get("requestId")
    return str(found) if found else None


def note(**fields: Any) -> None:
    """Add fields to the request being served (nothing outside one)."""
    found = _fields.get()
    if found is not None:
        found.update(fields)


@contextmanager
def bind(**fields: Any) -> Iterator[dict[str, Any]]:
    """Serve one request or run in this block with a fresh set of fields."""
    token = _fields.set(dict(fields))
    try:
        found = _fields.get()
        assert found is not None
        yield found
    finally:
        _fields.reset(token)
