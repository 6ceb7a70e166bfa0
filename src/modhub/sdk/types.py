"""Request, Response, User and JobContext: the values handlers see."""

from __future__ import annotations

import json as _json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from modhub.sdk.events import Events
    from modhub.sdk.services import ModuleCalls, Store


def _no_store() -> Store:
    from modhub.sdk.services import Store

    return Store()  # outside a worker: every call says the store is unavailable here


def _no_calls() -> ModuleCalls:
    from modhub.sdk.services import ModuleCalls

    return ModuleCalls()


def _no_events() -> Events:
    from modhub.sdk.events import Events

    return Events()


@dataclass(frozen=True)
class User:
    """The caller of a route: user name, role and the role's permissions."""

    username: str
    role: str
    permissions: frozenset[str] = frozenset()

    def can(self, permission: str) -> bool:
        """Return whether the user holds `permission` (directly, by `scope:*` or `*`)."""
        scope = permission.split(":", 1)[0]
        return bool({"*", permission, f"{scope}:*"} & self.permissions)


@dataclass
class Request:
    """One HTTP request to a module route."""

    method: str
    path: str
    path_params: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    query_lists: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    user: User | None = None
    config: dict[str, Any] = field(default_factory=dict)
    request_id: str = ""
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("module"))
    store: Store = field(default_factory=_no_store)
    modules: ModuleCalls = field(default_factory=_no_calls)
    events: Events = field(default_factory=_no_events)

    @property
    def json(self) -> Any:
        """Return the body parsed as JSON (None when there is no body)."""
        return _json.loads(self.body) if self.body else None


@dataclass
class Response:
    """What a handler may return to choose the status, headers or raw bytes."""

    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None

    def encoded(self) -> tuple[bytes, str]:
        """Return the body bytes and their content type."""
        if self.body is not None:
            return self.body, self.content_type or "application/octet-stream"
        payload = _json.dumps(self.json, separators=(",", ":"), default=str).encode()
        return payload, self.content_type or "application/json"


@dataclass
class JobContext:
    """What a job handler receives for one run."""

    job: str
    scheduled_time: datetime
    attempt: int = 1
    config: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("module"))
    store: Store = field(default_factory=_no_store)
    modules: ModuleCalls = field(default_factory=_no_calls)
    events: Events = field(default_factory=_no_events)


class RouteHandler(Protocol):
    """The contract of a route handler: `def handler(request)` (or `async def`)."""

    def __call__(self, request: Request, /) -> Any:
        """Answer a request with a Response, bytes, or any JSON-serialisable value."""


class JobHandler(Protocol):
    """The contract of a job handler: `def handler(context)` (or `async def`)."""

    def __call__(self, context: JobContext, /) -> Any:
        """Run one job attempt and return a JSON-serialisable result (or None)."""
