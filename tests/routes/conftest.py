"""Fakes of the route tests: a worker pool, an authenticator, configs, and a tiny app."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from modhub.api import problems
from modhub.api.limits import BodyLimit
from modhub.auth import Principal
from modhub.errors import NotFound, Unauthorized
from modhub.manifest import Manifest
from modhub.routes import (
    ModuleRoutes,
    RouteTable,
    RouteTableHolder,
    build_module_routes,
    module_router,
)
from modhub.sandbox import ModuleRuntime

MAX_BODY = 1024 * 1024
TOKENS = {
    "admin-token": Principal("ada", "admin", frozenset({"*"})),
    "reader-token": Principal("rita", "reader", frozenset({"vmware:read"})),
    "nobody-token": Principal("nick", "viewer", frozenset({"modules:read"})),
}


def auth(token: str = "admin-token") -> dict[str, str]:
    """Return the Authorization header of a fake token."""
    return {"Authorization": f"Bearer {token}"}


def manifest(name: str = "vmware", version: str = "1.0.0", **fields: Any) -> Manifest:
    """Return a typed manifest with the given routes and fields."""
    return Manifest.model_validate(
        {"name": name, "version": version, "displayName": f"{name.title()} module", **fields}
    )


def api(*routes: dict[str, Any]) -> dict[str, Any]:
    """Return the `capabilities` of a manifest with these routes."""
    return {"api": {"routes": list(routes)}}


def route(method: str, path: str, handler: str = "handlers/h.py", **fields: Any) -> dict[str, Any]:
    """Return one manifest route."""
    return {"method": method, "path": path, "handler": handler, **fields}


def make_runtime(folder: Path, m: Manifest, files: tuple[str, ...] | None = None) -> ModuleRuntime:
    """Create the module's code folder with its handler files; return its runtime."""
    code = folder / m.name / m.version
    for ref in files if files is not None else [r.handler for r in m.capabilities.api.routes]:
        path = code / ref.split(":")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("def handler(request):\n    return {}\n")
    code.mkdir(parents=True, exist_ok=True)
    return ModuleRuntime(name=m.name, version=m.version, code=code, env=folder / "env")


def compiled(folder: Path, m: Manifest, *, code: bool = True) -> ModuleRoutes:
    """Return the routes of `m`, with code for every handler unless `code` is False."""
    return build_module_routes(m, make_runtime(folder, m) if code else None)


@dataclass
class Call:
    """One call the fake pool received."""

    runtime: ModuleRuntime
    kind: str
    handler: str
    payload: dict[str, Any]
    config: dict[str, Any]


Answer = dict[str, Any] | Exception | Callable[[Call], Awaitable[dict[str, Any]]]


@dataclass
class FakePool:
    """Records calls and answers with `answer`: a dict, an exception, or a coroutine."""

    answer: Answer = field(
        default_factory=lambda: {
            "status": 200,
            "headers": {},
            "body": b'{"ok":true}',
            "contentType": "application/json",
        }
    )
    calls: list[Call] = field(default_factory=list)

    async def call(
        self,
        runtime: ModuleRuntime,
        kind: str,
        handler: str,
        payload: dict[str, Any],
        config: dict[str, Any],
    ) -> dict[str, Any]:
        """Record the call and answer it."""
        call = Call(runtime, kind, handler, payload, config)
        self.calls.append(call)
        if isinstance(self.answer, Exception):
            raise self.answer
        if callable(self.answer):
            return await self.answer(call)
        return self.answer

    def retire_soon(self, keep: dict[str, str]) -> None:
        """Nothing to stop: no worker runs."""

    async def close(self) -> None:
        """Nothing to stop: no worker runs."""


class FakeAuth:
    """Knows the fake TOKENS."""

    def authenticate(self, authorization: str | None) -> Principal:
        """Return the principal of a fake bearer token."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or token not in TOKENS:
            raise Unauthorized("send 'Authorization: Bearer <token>'")
        return TOKENS[token]


@dataclass
class FakeConfigs:
    """Module configs in a dict."""

    values: dict[str, dict[str, Any]] = field(default_factory=dict)

    def config_for_code(self, name: str) -> dict[str, Any]:
        """Return the config of `name`."""
        if name not in self.values:
            raise NotFound(f"no module named '{name}'")
        return dict(self.values[name])


@dataclass
class FakeServices:
    """The services dispatching needs, all fakes but the holder."""

    routes: RouteTableHolder = field(default_factory=RouteTableHolder)
    pool: FakePool = field(default_factory=FakePool)
    auth: FakeAuth = field(default_factory=FakeAuth)
    module_configs: FakeConfigs = field(default_factory=FakeConfigs)

    def enable(self, routes: ModuleRoutes, config: dict[str, Any] | None = None) -> None:
        """Put a module in the table, with its config."""
        self.routes.update(lambda table: table.with_module(routes))
        self.module_configs.values[routes.name] = config or {}


def make_app(svc: FakeServices, *, inline_lookups: bool = False) -> FastAPI:
    """Return a tiny app: problem errors, the body limit and the module router."""
    app = FastAPI()
    app.state.services = svc
    problems.install(app)
    app.include_router(module_router(inline_lookups=inline_lookups), prefix="/api/v1")
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY)
    return app


@pytest.fixture
def fake() -> FakeServices:
    """Return fake services with an empty route table."""
    return FakeServices(routes=RouteTableHolder(RouteTable()))


def run(coro: Awaitable[Any]) -> Any:
    """Run a coroutine to completion."""

    async def main() -> Any:
        return await coro

    return asyncio.run(main())
