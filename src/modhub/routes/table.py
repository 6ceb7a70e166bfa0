"""The route table: every enabled module's routes, compiled, in one immutable object.

Readers take `holder.table` once per request and use that object to the end, so a
request never sees half of a change. Writers build a new table (`with_module`,
`without_module`) and swap the reference; `RouteTableHolder.update` serialises writers
so that two changes made at once cannot lose one another.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from modhub.errors import ModhubError, NotFound
from modhub.manifest import Manifest
from modhub.manifest.formats import split_handler
from modhub.registry import Registry, Status
from modhub.sandbox.launch import handler_language

if TYPE_CHECKING:
    from modhub.sandbox import ModuleRuntime

RuntimeFor = Callable[[Manifest, Path | None], "ModuleRuntime | None"]
"""Return the runtime of a module version from its manifest and code folder (None: no code)."""


class MethodNotAllowed(ModhubError):
    """The path exists in the module, but not for this method; `allowed` lists those that do."""

    status, title, kind = 405, "Method not allowed", "method-not-allowed"

    def __init__(self, detail: str, allowed: Sequence[str]) -> None:
        super().__init__(detail, allowed=list(allowed))
        self.allowed = list(allowed)


@dataclass(frozen=True)
class CompiledRoute:
    """One route of a module, ready to match and dispatch.

    `segments` holds each literal segment of the template, None where a parameter sits;
    `params` names the parameters in order. `missing` says why the handler cannot run
    (None when it can): such a route answers 501.
    """

    module: str
    method: str
    path: str
    segments: tuple[str | None, ...]
    params: tuple[str, ...]
    handler: str
    permissions: tuple[str, ...] = ()
    description: str | None = None
    missing: str | None = None

    @property
    def handler_runnable(self) -> bool:
        """Return whether the handler can be called in the module's worker."""
        return self.missing is None

    @classmethod
    def compile(
        cls,
        module: str,
        method: str,
        path: str,
        handler: str,
        *,
        permissions: Iterable[str] = (),
        description: str | None = None,
        missing: str | None = None,
    ) -> CompiledRoute:
        """Compile a normalised template such as `/vms/{id}/disks`."""
        segments: list[str | None] = []
        params: list[str] = []
        for part in path.strip("/").split("/") if path != "/" else ():
            if part.startswith("{") and part.endswith("}"):
                segments.append(None)
                params.append(part[1:-1])
            else:
                segments.append(part)
        return cls(
            module=module,
            method=method.upper(),
            path=path,
            segments=tuple(segments),
            params=tuple(params),
            handler=handler,
            permissions=tuple(permissions),
            description=description,
            missing=missing,
        )


class _Node:
    """A node of a module's segment tree: literal children, one parameter child, routes."""

    __slots__ = ("literals", "param", "routes")

    def __init__(self) -> None:
        self.literals: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.routes: dict[str, CompiledRoute] = {}


@dataclass(frozen=True)
class ModuleRoutes:
    """The routes of one enabled module version and the runtime its handlers run in.

    `runtime` is None for a module without code (a bare manifest).
    """

    name: str
    version: str
    runtime: ModuleRuntime | None
    routes: tuple[CompiledRoute, ...]
    title: str = ""
    description: str | None = None
    _tree: _Node = field(init=False, repr=False, compare=False)
    _depth: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        root = _Node()
        for route in self.routes:
            node = root
            for segment in route.segments:
                if segment is None:
                    node.param = node.param or _Node()
                    node = node.param
                else:
                    node = node.literals.setdefault(segment, _Node())
            node.routes.setdefault(route.method, route)  # the manifest refuses duplicates
        object.__setattr__(self, "_tree", root)
        object.__setattr__(self, "_depth", max((len(r.segments) for r in self.routes), default=0))

    def match(self, method: str, segments: Sequence[str]) -> tuple[CompiledRoute, dict[str, str]]:
        """Return the route for `method` and the path's segments, and its path parameters.

        Literal segments win over parameters at the first place they differ; HEAD falls
        back to GET. Raises NotFound when no route has this path, MethodNotAllowed when
        routes have it for other methods only.
        """
        if segments and segments[-1] == "":
            segments = segments[:-1]  # one trailing slash is ignored
        method = method.upper()
        allowed: set[str] = set()
        if len(segments) <= self._depth:
            for node, values in _walk(self._tree, segments, 0, ()):
                route = node.routes.get(method)
                if route is None and method == "HEAD":
                    route = node.routes.get("GET")
                if route is not None:
                    return route, dict(zip(route.params, values, strict=True))
                allowed.update(node.routes)
        path = "/" + "/".join(segments)
        if allowed:
            if "GET" in allowed:
                allowed.add("HEAD")
            methods = sorted(allowed)
            raise MethodNotAllowed(
                f"module '{self.name}' has no {method} {path}; allowed: {', '.join(methods)}",
                methods,
            )
        raise NotFound(f"module '{self.name}' has no route {path}", module=self.name, path=path)


def _walk(
    node: _Node, segments: Sequence[str], i: int, values: tuple[str, ...]
) -> Iterator[tuple[_Node, tuple[str, ...]]]:
    """Yield every node matching `segments[i:]` below `node`, literal branches first."""
    if i == len(segments):
        if node.routes:
            yield node, values
        return
    segment = segments[i]
    literal = node.literals.get(segment)
    if literal is not None:
        yield from _walk(literal, segments, i + 1, values)
    if node.param is not None and segment:
        yield from _walk(node.param, segments, i + 1, (*values, segment))


class RouteTable(Mapping[str, ModuleRoutes]):
    """An immutable mapping of module name to its routes; changes return a new table."""

    __slots__ = ("_modules",)

    def __init__(self, modules: Iterable[ModuleRoutes] = ()) -> None:
        self._modules: Mapping[str, ModuleRoutes] = MappingProxyType({m.name: m for m in modules})

    def __getitem__(self, name: str) -> ModuleRoutes:
        return self._modules[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __repr__(self) -> str:
        return f"RouteTable({', '.join(f'{m.name}@{m.version}' for m in self.values())})"

    def with_module(self, routes: ModuleRoutes) -> RouteTable:
        """Return a table where `routes` replaces any routes of the same module."""
        modules = dict(self._modules)
        modules[routes.name] = routes
        return RouteTable(modules.values())

    def without_module(self, name: str) -> RouteTable:
        """Return a table without the module `name` (the same table if it is absent)."""
        if name not in self._modules:
            return self
        return RouteTable(m for n, m in self._modules.items() if n != name)

    def match(
        self, module: str, method: str, path: str | Sequence[str]
    ) -> tuple[CompiledRoute, dict[str, str]]:
        """Return the route of `module` for `method` and `path`, and its path parameters.

        `path` is a decoded path relative to the module (`/vms/42`) or its segments.
        Raises NotFound for a module that is not enabled or a path it does not serve, and
        MethodNotAllowed when the path exists for other methods only.
        """
        routes = self._modules.get(module)
        if routes is None:
            raise NotFound(f"no enabled module named '{module}'", module=module)
        segments = split_path(path) if isinstance(path, str) else path
        return routes.match(method, segments)


def split_path(path: str) -> list[str]:
    """Return the segments of a module-relative path (`/` has none)."""
    stripped = path[1:] if path.startswith("/") else path
    return stripped.split("/") if stripped else []


class RouteTableHolder:
    """Holds the current RouteTable; readers take `table`, writers `swap` or `update`."""

    def __init__(self, table: RouteTable | None = None) -> None:
        self._table = table if table is not None else RouteTable()
        self._lock = threading.Lock()

    @property
    def table(self) -> RouteTable:
        """Return the current table; keep using this object for the whole request."""
        return self._table

    def swap(self, table: RouteTable) -> RouteTable:
        """Make `table` the current one and return the previous one."""
        with self._lock:
            previous, self._table = self._table, table
        return previous

    def update(self, change: Callable[[RouteTable], RouteTable]) -> RouteTable:
        """Apply `change` to the current table and install its result, one writer at a time.

        `change` runs under the writers' lock, so it may read the registry to decide: the
        last writer to get the lock reads the newest state.
        """
        with self._lock:
            self._table = change(self._table)
            return self._table


def build_module_routes(manifest: Manifest, runtime: ModuleRuntime | None) -> ModuleRoutes:
    """Compile the routes of a module version; `runtime` is None when it has no code."""
    if runtime is not None and (runtime.name, runtime.version) != (
        manifest.name,
        manifest.version,
    ):
        raise ValueError(
            f"runtime {runtime.name}@{runtime.version} does not belong to "
            f"{manifest.name}@{manifest.version}"
        )
    routes = tuple(
        CompiledRoute.compile(
            manifest.name,
            route.method,
            route.path,
            route.handler,
            permissions=route.permissions,
            description=route.description,
            missing=_missing(manifest.name, route.handler, runtime),
        )
        for route in manifest.capabilities.api.routes
    )
    return ModuleRoutes(
        name=manifest.name,
        version=manifest.version,
        runtime=runtime,
        routes=routes,
        title=manifest.display_name,
        description=manifest.description,
    )


def _missing(module: str, handler: str, runtime: ModuleRuntime | None) -> str | None:
    """Return why `handler` cannot run, or None when it can."""
    file, _ = split_handler(handler)
    if runtime is None:
        return (
            f"module '{module}' has no code (it was registered from a bare manifest): "
            f"handler '{handler}' is not implemented"
        )
    if not handler_language(file):
        return f"handler '{handler}' of module '{module}' is not a Python, TypeScript or JS file"
    # A code folder not on this node yet is materialized before its worker starts (the
    # handler files were checked when the version was registered).
    if runtime.code.is_dir() and not (runtime.code / file).is_file():
        return f"handler file '{file}' of module '{module}' does not exist"
    return None


# -- keeping the table in step with the registry -----------------------------------------------


def load_table(
    registry: Registry, runtime_for: RuntimeFor, current: RouteTable | None = None
) -> RouteTable:
    """Return a table of every ENABLED module in the registry (at start-up, and when
    another process changed the registry).

    A module UPDATING keeps what `current` serves of it: its old version answers until
    the upgrade switches versions (an upgrade of a DISABLED module serves nothing).
    """
    modules: list[ModuleRoutes] = []
    offset = 0
    while True:
        page = registry.list_modules(status=Status.ENABLED, limit=500, offset=offset)
        for summary in page.items:
            routes = _module_routes(registry, summary.name, runtime_for)
            if routes is not None:
                modules.append(routes)
        offset += len(page.items)
        if not page.items or offset >= page.total:
            break
    if current:
        modules += [current[name] for name in _updating(registry) if name in current]
    return RouteTable(modules)


def _updating(registry: Registry) -> list[str]:
    """Return the names of the modules being upgraded."""
    names: list[str] = []
    while True:
        page = registry.list_modules(status=Status.UPDATING, limit=500, offset=len(names))
        names += [summary.name for summary in page.items]
        if not page.items or len(names) >= page.total:
            return names


def refresh_module(
    holder: RouteTableHolder, registry: Registry, name: str, runtime_for: RuntimeFor
) -> RouteTable:
    """Make the table serve `name` as the registry says now.

    ENABLED: the active version's routes (an upgrade or rollback switches versions in one
    swap; requests in flight finish on the version they started with). UPDATING: no
    change, so an upgrade keeps serving the old version until it is done. Anything else
    (DISABLED, REMOVING, REGISTERED, gone): no routes, every path answers 404.

    Call it after every status change, upgrade, rollback and removal, once the registry
    has committed. The registry is read under the writers' lock, so concurrent refreshes
    always end with the newest state.
    """

    def change(table: RouteTable) -> RouteTable:
        try:
            status = registry.get(name).status
        except NotFound:
            return table.without_module(name)
        if status == Status.UPDATING:
            return table
        routes = _module_routes(registry, name, runtime_for) if status == Status.ENABLED else None
        return table.without_module(name) if routes is None else table.with_module(routes)

    return holder.update(change)


def _module_routes(registry: Registry, name: str, runtime_for: RuntimeFor) -> ModuleRoutes | None:
    """Return the routes of the active version of `name` (None if it is gone)."""
    try:
        manifest, row = registry.version_info(name)
    except NotFound:
        return None
    code = Path(row.path) if row.path is not None else None
    return build_module_routes(manifest, runtime_for(manifest, code))
