"""Module routes in the OpenAPI document: one tag per enabled module, rebuilt on change."""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI

from modhub.api.problems import MEDIA_TYPE, Problem
from modhub.routes.table import CompiledRoute, ModuleRoutes

MODULE_PREFIX = "/api/v1/m"
SECURITY_SCHEME = "HTTPBearer"
_WITH_BODY = ("POST", "PUT", "PATCH")
_PROBLEMS = {
    401: "No valid bearer token",
    403: "The caller lacks a permission of the route",
    404: "The module is not enabled, or has no such route",
    405: "The path exists for other methods",
    500: "The handler raised; the problem carries the request id",
    501: "The handler cannot run (no code, or not a Python, TypeScript or JavaScript file)",
    502: "The module answered something the platform refuses",
    503: "The module's worker is down or restarting",
    504: "The handler did not answer within the module's timeout",
}


def module_tag(name: str) -> str:
    """Return the OpenAPI tag of a module's routes."""
    return f"module:{name}"


def with_module_routes(
    schema: Mapping[str, Any], table: Mapping[str, ModuleRoutes], prefix: str = MODULE_PREFIX
) -> dict[str, Any]:
    """Return a copy of `schema` with every route of `table` under `{prefix}/{module}{path}`."""
    out = copy.deepcopy(dict(schema))
    paths: dict[str, Any] = out.setdefault("paths", {})
    tags: list[dict[str, Any]] = out.setdefault("tags", [])
    components: dict[str, Any] = out.setdefault("components", {})
    components.setdefault("securitySchemes", {}).setdefault(
        SECURITY_SCHEME, {"type": "http", "scheme": "bearer"}
    )
    components.setdefault("schemas", {}).setdefault("Problem", Problem.model_json_schema())
    for module in sorted(table.values(), key=lambda m: m.name):
        about = f"{module.title or module.name} {module.version}"
        if module.description:
            about += f": {module.description}"
        tags.append({"name": module_tag(module.name), "description": about})
        for route in module.routes:
            url = f"{prefix}/{module.name}{route.path}"
            paths.setdefault(url, {})[route.method.lower()] = _operation(module, route)
    return out


def _operation(module: ModuleRoutes, route: CompiledRoute) -> dict[str, Any]:
    notes = [f"Handler `{route.handler}` of module `{module.name}` {module.version}."]
    if route.permissions:
        notes.append("Needs the permissions " + ", ".join(f"`{p}`" for p in route.permissions))
    if route.missing:
        notes.append(f"Answers 501: {route.missing}.")
    statuses = [401, 404, 405, 500, 501, 502, 503, 504]
    if route.permissions:
        statuses.append(403)
    operation: dict[str, Any] = {
        "tags": [module_tag(module.name)],
        "summary": route.description or f"{route.method} {route.path} → {route.handler}",
        "description": "\n\n".join(notes),
        "operationId": _operation_id(module.name, route),
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in route.params
        ],
        "security": [{SECURITY_SCHEME: []}],
        "responses": {
            "200": {"description": "The handler's response", "content": {"*/*": {"schema": {}}}},
            **{
                str(status): {
                    "description": _PROBLEMS[status],
                    "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
                }
                for status in sorted(statuses)
            },
        },
        "x-modhub-module": module.name,
        "x-modhub-handler": route.handler,
        "x-modhub-permissions": list(route.permissions),
    }
    if route.method in _WITH_BODY:
        operation["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": {}}, "*/*": {"schema": {}}},
        }
    return operation


def _operation_id(module: str, route: CompiledRoute) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", route.path).strip("_") or "root"
    return f"module_{module.replace('-', '_')}_{route.method.lower()}_{slug}"


def install_openapi(
    app: FastAPI,
    current_table: Callable[[], Mapping[str, ModuleRoutes]],
    prefix: str = MODULE_PREFIX,
) -> None:
    """Make `app.openapi()` include the module routes of `current_table()`.

    FastAPI computes its own document once; the module part is rebuilt whenever the
    table object changes (a new table is built for every change), and reused otherwise.
    """
    base = app.openapi
    lock = threading.Lock()
    cached: list[tuple[Mapping[str, ModuleRoutes], dict[str, Any]]] = []

    def openapi() -> dict[str, Any]:
        table = current_table()
        with lock:
            if cached and cached[0][0] is table:
                return cached[0][1]
            schema = with_module_routes(base(), table, prefix)
            cached[:] = [(table, schema)]
            return schema

    app.openapi = openapi  # type: ignore[method-assign]
