"""Rules that relate several manifest fields to each other.

They run on a `View`: the typed parts of a manifest that passed the models, so
that a manifest with shape errors still gets every other problem reported.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import re2
from pydantic import BaseModel, ValidationError

from modhub.manifest import formats
from modhub.manifest.model import (
    ConfigField,
    EmittedEvent,
    Job,
    Manifest,
    Metadata,
    NavItem,
    Page,
    Route,
    Subscription,
)
from modhub.manifest.result import Findings, Location
from modhub.manifest.subscriptions import EMITS, SUBSCRIBES, check_events

M = TypeVar("M", bound=BaseModel)
NODE_HANDLERS = (".ts", ".mts", ".js", ".mjs")  # run by the Node worker
NON_PYTHON_HANDLERS = (".tsx", ".jsx", ".cjs")  # JavaScript that no worker runs as a handler
JS_COMPONENTS = (".js", ".mjs", ".tsx", ".jsx", ".ts", ".mts")  # TS/JSX: compiled at install
KNOWN_SYSTEM_TOOLS = frozenset({"python", "node", "modhub"})
ROUTES: Location = ("capabilities", "api", "routes")
JOBS: Location = ("capabilities", "jobs", "handlers")
PAGES: Location = ("capabilities", "ui", "pages")
NAVIGATION: Location = ("capabilities", "ui", "navigation")


@dataclass
class View:
    """The parts of a manifest that are well-formed, with their list indexes."""

    name: str | None = None
    routes: list[tuple[int, Route]] = field(default_factory=list)
    jobs: list[tuple[int, Job]] = field(default_factory=list)
    pages: list[tuple[int, Page]] = field(default_factory=list)
    navigation: list[tuple[int, NavItem]] = field(default_factory=list)
    permissions: list[tuple[int, str]] = field(default_factory=list)
    requirements: list[tuple[int, str]] = field(default_factory=list)
    config_fields: dict[str, ConfigField] = field(default_factory=dict)
    config_keys: set[str] = field(default_factory=set)
    defaults: dict[str, Any] = field(default_factory=dict)
    dependencies: dict[str, dict[str, Any]] = field(default_factory=dict)
    metadata_extra: list[str] = field(default_factory=list)
    permissions_known: bool = True
    emits: list[tuple[int, EmittedEvent]] = field(default_factory=list)
    subscribes: list[tuple[int, Subscription]] = field(default_factory=list)

    @classmethod
    def of(cls, manifest: Manifest) -> View:
        """Return the view of a manifest that passed the models."""
        caps, deps = manifest.capabilities, manifest.dependencies
        return cls(
            name=manifest.name,
            routes=list(enumerate(caps.api.routes)),
            jobs=list(enumerate(caps.jobs.handlers)),
            pages=list(enumerate(caps.ui.pages)),
            navigation=list(enumerate(caps.ui.navigation)),
            permissions=list(enumerate(manifest.permissions)),
            requirements=list(enumerate(deps.python)),
            config_fields=dict(manifest.config.schema_),
            config_keys=set(manifest.config.schema_),
            defaults=dict(manifest.config.defaults),
            dependencies={"modules": deps.modules, "npm": deps.npm, "system": deps.system},
            metadata_extra=list(manifest.metadata.model_extra or {}),
            emits=list(enumerate(caps.events.emits)),
            subscribes=list(enumerate(caps.events.subscribes)),
        )

    @classmethod
    def salvage(cls, data: Mapping[str, Any]) -> View:
        """Return the well-formed parts of a manifest that failed the models."""
        config = _dict(data, "config")
        fields = {
            key: item
            for key, item in _valid(ConfigField, _dict(config, "schema").items())
            if isinstance(key, str)
        }
        metadata = _dict(data, "metadata")
        extra = [k for k in metadata if k not in Metadata.model_fields]
        name = data.get("name")
        return cls(
            name=name if isinstance(name, str) else None,
            routes=list(_valid(Route, enumerate(_list(data, *ROUTES)))),
            jobs=list(_valid(Job, enumerate(_list(data, *JOBS)))),
            pages=list(_valid(Page, enumerate(_list(data, *PAGES)))),
            navigation=list(_valid(NavItem, enumerate(_list(data, *NAVIGATION)))),
            permissions=[
                (i, p)
                for i, p in enumerate(_list(data, "permissions"))
                if isinstance(p, str) and formats.PERMISSION.fullmatch(p)
            ],
            requirements=[
                (i, r)
                for i, r in enumerate(_list(data, "dependencies", "python"))
                if isinstance(r, str)
            ],
            config_fields=fields,
            config_keys=set(_dict(config, "schema")),
            permissions_known=isinstance(data.get("permissions", []), list),
            defaults=_dict(config, "defaults"),
            dependencies={k: _dict(data, "dependencies", k) for k in ("modules", "npm", "system")},
            metadata_extra=extra,
            emits=list(_valid(EmittedEvent, enumerate(_list(data, *EMITS)))),
            subscribes=list(_valid(Subscription, enumerate(_list(data, *SUBSCRIBES)))),
        )


def run(view: View, findings: Findings, folder: Path | None = None) -> None:
    """Run every cross-field rule, recording what it finds."""
    for check in CHECKS:
        check(view, findings)
    if folder is not None:
        check_files(view, findings, folder)


def check_routes(view: View, findings: Findings) -> None:
    """Refuse duplicate routes and routes that match the same requests."""
    seen: dict[tuple[str, str], tuple[int, str]] = {}
    for i, route in view.routes:
        key = (route.method, formats.route_shape(route.path))
        if key in seen:
            j, other = seen[key]
            code, what = (
                ("duplicate_route", "is declared twice")
                if other == route.path
                else ("ambiguous_route", f"matches the same requests as {other}")
            )
            findings.error(
                (*ROUTES, i, "path"), code, f"{route.method} {route.path} {what} (routes/{j})"
            )
        else:
            seen[key] = (i, route.path)
        _check_handler(findings, (*ROUTES, i, "handler"), route.handler)


def check_jobs(view: View, findings: Findings) -> None:
    """Refuse two jobs with one name."""
    names: dict[str, int] = {}
    for i, job in view.jobs:
        if job.name in names:
            findings.error(
                (*JOBS, i, "name"),
                "duplicate_job",
                f"job name '{job.name}' is already used by handlers/{names[job.name]}",
            )
        names.setdefault(job.name, i)
        _check_handler(findings, (*JOBS, i, "handler"), job.handler)


def check_ui(view: View, findings: Findings) -> None:
    """Refuse duplicate page paths; warn about navigation to no page."""
    paths: dict[str, int] = {}
    for i, page in view.pages:
        if page.path in paths:
            findings.error(
                (*PAGES, i, "path"),
                "duplicate_page",
                f"page path {page.path} is already used by pages/{paths[page.path]}",
            )
        paths.setdefault(page.path, i)
        if not page.component.endswith(JS_COMPONENTS):
            findings.warn(
                (*PAGES, i, "component"),
                "component_not_javascript",
                f"the console loads JavaScript ES modules; build '{page.component}' "
                "to a .js file before shipping the module (.tsx, .jsx and .ts pages are "
                "compiled at install)",
            )
    for i, item in view.navigation:
        if item.path not in paths:
            findings.warn(
                (*NAVIGATION, i, "path"),
                "unknown_navigation_target",
                f"navigation '{item.label}' points to {item.path}, which no page declares",
            )


def check_permissions(view: View, findings: Findings) -> None:
    """Refuse duplicate permissions and permissions used but not declared."""
    declared: set[str] = set()
    for i, permission in view.permissions:
        if permission in declared:
            findings.error(
                ("permissions", i),
                "duplicate_permission",
                f"permission '{permission}' is declared twice",
            )
        declared.add(permission)
    used: list[tuple[Location, list[str]]] = [
        ((*ROUTES, i), r.permissions) for i, r in view.routes
    ] + [((*PAGES, i), p.permissions) for i, p in view.pages]
    if not view.permissions_known:
        return  # `permissions` itself is malformed: that is the error to report
    for location, permissions in used:
        for k, permission in enumerate(permissions):
            if permission not in declared:
                findings.error(
                    (*location, "permissions", k),
                    "undeclared_permission",
                    f"permission '{permission}' is used here but not declared in "
                    "the manifest's 'permissions'",
                )


def check_dependencies(view: View, findings: Findings) -> None:
    """Refuse a module depending on itself; warn about what modhub cannot install."""
    if view.name and view.name in view.dependencies.get("modules", {}):
        findings.error(
            ("dependencies", "modules", view.name),
            "self_dependency",
            f"module '{view.name}' depends on itself",
        )
    for package in view.dependencies.get("npm", {}):
        findings.warn(
            ("dependencies", "npm", package),
            "npm_dependency",
            f"npm package '{package}' is not installed from the manifest: ship a "
            "package.json and its package-lock.json in the module folder (npm ci installs "
            "them), or use dependencies.python for Python code",
        )
    for tool in view.dependencies.get("system", {}):
        if tool not in KNOWN_SYSTEM_TOOLS:
            findings.warn(
                ("dependencies", "system", tool),
                "unknown_system_tool",
                f"modhub can check only {', '.join(sorted(KNOWN_SYSTEM_TOOLS))}; "
                f"'{tool}' will be looked up on PATH by name",
            )


def check_config(view: View, findings: Findings) -> None:
    """Check each config field against itself and `defaults` against the fields."""
    for key, spec in view.config_fields.items():
        _check_field(findings, ("config", "schema", key), spec)
    for key, value in view.defaults.items():
        where: Location = ("config", "defaults", key)
        if key not in view.config_keys:
            findings.error(
                where,
                "unknown_config_key",
                f"default for '{key}', which config.schema does not declare",
            )
            continue
        declared = view.config_fields.get(key)
        if declared is None:
            continue
        problem = value_problem(declared, value)
        if problem:
            findings.error(where, "invalid_default", f"default for '{key}' {problem}")
        elif declared.default is not None and declared.default != value:
            findings.warn(
                where,
                "conflicting_default",
                f"'{key}' has default {declared.default!r} in config.schema and "
                f"{value!r} here; this one wins",
            )


def check_metadata(view: View, findings: Findings) -> None:
    """Warn about metadata keys modhub does not know."""
    for key in view.metadata_extra:
        findings.warn(
            ("metadata", key),
            "unknown_metadata",
            f"metadata key '{key}' is not one modhub knows; it is kept as it is",
        )


def check_files(view: View, findings: Findings, folder: Path) -> None:
    """Refuse handler and component files missing from the module folder."""
    refs: list[tuple[Location, str]] = [
        ((*ROUTES, i, "handler"), formats.split_handler(r.handler)[0]) for i, r in view.routes
    ]
    refs += [((*JOBS, i, "handler"), formats.split_handler(j.handler)[0]) for i, j in view.jobs]
    refs += [((*PAGES, i, "component"), p.component) for i, p in view.pages]
    refs += [
        ((*SUBSCRIBES, i, "handler"), formats.split_handler(s.handler)[0])
        for i, s in view.subscribes
    ]
    root = folder.resolve()
    for location, relative in refs:
        target = (root / relative).resolve()
        code = "component_not_found" if location[-1] == "component" else "handler_not_found"
        if not target.is_relative_to(root):
            findings.error(
                location, "file_outside_module", f"'{relative}' resolves outside the module folder"
            )
        elif not target.is_file():
            findings.error(location, code, f"file '{relative}' does not exist in {folder}")


def value_problem(spec: ConfigField, value: Any) -> str | None:
    """Return why `value` is not acceptable for a config field, or None."""
    kind = spec.type
    if kind in ("string", "password"):
        if not isinstance(value, str):
            return f"must be a string, not {_json_type(value)}"
    elif kind in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, not {_json_type(value)}"
        if kind == "integer" and not (isinstance(value, int) or float(value).is_integer()):
            return "must be a whole number"
        if not math.isfinite(value):
            return "must be a finite number"
    elif kind == "boolean":
        if not isinstance(value, bool):
            return f"must be true or false, not {_json_type(value)}"
    elif kind == "select" and not any(
        # JSON's true is not 1: Python's `in` would let True match the option 1
        option == value and isinstance(option, bool) == isinstance(value, bool)
        for option in spec.option_values()
    ):
        return f"must be one of {spec.option_values()!r}"
    return _bounds_problem(spec, value)


def _bounds_problem(spec: ConfigField, value: Any) -> str | None:
    rules = spec.validation
    if rules is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if rules.min is not None and value < rules.min:
            return f"must be at least {rules.min:g}"
        if rules.max is not None and value > rules.max:
            return f"must be at most {rules.max:g}"
    if isinstance(value, str):
        if rules.min_length is not None and len(value) < rules.min_length:
            return f"must be at least {rules.min_length} characters long"
        if rules.max_length is not None and len(value) > rules.max_length:
            return f"must be at most {rules.max_length} characters long"
        if rules.pattern is not None and not _matches(rules.pattern, value):
            return f"must match the pattern {rules.pattern}"
    return None


def _matches(pattern: str, value: str) -> bool:
    try:
        return compile_pattern(pattern).search(value) is not None
    except re2.error:
        return True  # the pattern itself is reported as invalid_pattern


@functools.lru_cache(maxsize=32)  # each compiled pattern may hold up to 8 MiB (RE2's budget)
def compile_pattern(pattern: str) -> Any:
    """Compile a manifest's config pattern with RE2, whose matching time is linear in the
    input: a pattern from a module can never make the server backtrack for seconds."""
    options = re2.Options()
    options.log_errors = False  # the error is reported to the author, not to stderr
    return re2.compile(pattern, options)


def _pattern_problem(pattern: str) -> str | None:
    try:
        compile_pattern(pattern)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        return (
            f"pattern '{pattern}' does not compile with RE2: {reason} (patterns use RE2 "
            "syntax, without backreferences or lookaround, so that matching takes linear time)"
        )
    return None


def _check_field(findings: Findings, where: Location, spec: ConfigField) -> None:
    rules = spec.validation
    if rules is not None and rules.pattern is not None:
        problem = _pattern_problem(rules.pattern)
        if problem is not None:
            findings.error((*where, "validation", "pattern"), "invalid_pattern", problem)
    numeric = spec.type in ("number", "integer")
    textual = spec.type in ("string", "password")
    if spec.type == "select":
        values = spec.option_values()
        if not values:
            findings.error(
                (*where, "options"),
                "missing_options",
                "a select field needs a non-empty 'options' list",
            )
        elif len(set(map(repr, values))) != len(values):
            findings.error((*where, "options"), "duplicate_option", "options repeat a value")
    elif spec.options is not None:
        findings.error(
            (*where, "options"),
            "validation_not_applicable",
            f"'options' applies to select fields, not {spec.type}",
        )
    if rules is not None:
        for name, value, fits in (
            ("min", rules.min, numeric),
            ("max", rules.max, numeric),
            ("pattern", rules.pattern, textual),
            ("minLength", rules.min_length, textual),
            ("maxLength", rules.max_length, textual),
        ):
            if value is not None and not fits:
                findings.error(
                    (*where, "validation", name),
                    "validation_not_applicable",
                    f"'{name}' does not apply to a {spec.type} field",
                )
        for low, high, lo_name, hi_name in (
            (rules.min, rules.max, "min", "max"),
            (rules.min_length, rules.max_length, "minLength", "maxLength"),
        ):
            if low is not None and high is not None and low > high:
                findings.error(
                    (*where, "validation", lo_name),
                    "min_greater_than_max",
                    f"{lo_name} ({low:g}) is greater than {hi_name} ({high:g})",
                )
    if spec.default is not None:
        problem = value_problem(spec, spec.default)
        if problem:
            findings.error((*where, "default"), "invalid_default", f"the default {problem}")
    if spec.sensitive and spec.type not in ("string", "password"):
        findings.warn(
            (*where, "sensitive"),
            "sensitive_non_text",
            f"'sensitive' on a {spec.type} field: its value is still encrypted",
        )


def _check_handler(findings: Findings, where: Location, ref: str) -> None:
    file = formats.split_handler(ref)[0]
    if file.endswith(NON_PYTHON_HANDLERS):
        findings.warn(
            where,
            "handler_not_python",
            f"'{file}' cannot run as a handler: handlers are .py, .ts, .mts, .js or .mjs "
            "files (a component of JSX belongs in ui.pages); requests to it will answer 501",
        )
    elif not file.endswith((".py", *NODE_HANDLERS)):
        findings.error(
            where, "invalid_handler", f"handler '{file}' must be a .py, .ts, .mts, .js or .mjs file"
        )


CHECKS: tuple[Callable[[View, Findings], None], ...] = (
    check_routes,
    check_jobs,
    check_ui,
    check_permissions,
    check_dependencies,
    check_config,
    check_metadata,
    check_events,
)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _dict(data: Any, *keys: str) -> dict[str, Any]:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data if isinstance(data, dict) else {}


def _list(data: Any, *keys: str | int) -> list[Any]:
    for key in keys[:-1]:
        data = data.get(key) if isinstance(data, dict) else None
    found = data.get(keys[-1]) if isinstance(data, dict) else None
    return found if isinstance(found, list) else []


def _valid(model: type[M], items: Iterator[tuple[Any, Any]] | Any) -> Iterator[tuple[Any, M]]:
    for key, raw in items:
        try:
            yield key, model.model_validate(raw)
        except ValidationError:
            continue
