"""Builders of small manifests and assertions shared by the manifest tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modhub.manifest import Issue, ValidationResult

FIXTURES = Path(__file__).parent / "fixtures"
SEEDS = ("vmware-vcenter.json", "seed-test1.json", "seed-test2.json")
NAME = "my-module"
ROUTES = "/capabilities/api/routes"
JOBS = "/capabilities/jobs/handlers"
PAGES = "/capabilities/ui/pages"
NAVIGATION = "/capabilities/ui/navigation"


def load_fixture(name: str) -> dict[str, Any]:
    """Return a manifest from `tests/manifest/fixtures`."""
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text("utf-8"))
    return data


def manifest(**fields: Any) -> dict[str, Any]:
    """Return the smallest valid manifest, with `fields` added or replaced.

    Keys are manifest keys: pass camelCase ones through a dict, `manifest(**{"$schema": ...})`.
    """
    return {"name": NAME, "version": "1.0.0", "displayName": "My Module", **fields}


def route(
    method: str = "GET", path: str = "/vms", handler: str = "handlers/vms.py", **extra: Any
) -> dict[str, Any]:
    """Return one entry of `capabilities.api.routes`."""
    return {"method": method, "path": path, "handler": handler, **extra}


def job(name: str = "sync", handler: str = "jobs/sync.py", **extra: Any) -> dict[str, Any]:
    """Return one entry of `capabilities.jobs.handlers`."""
    return {"name": name, "handler": handler, **extra}


def page(
    path: str = "/vmware", component: str = "pages/dashboard.js", **extra: Any
) -> dict[str, Any]:
    """Return one entry of `capabilities.ui.pages`."""
    return {"path": path, "component": component, "title": "VMware", **extra}


def with_routes(*routes: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """Return a manifest declaring `routes`."""
    return manifest(capabilities={"api": {"routes": list(routes)}}, **fields)


def with_jobs(*jobs: dict[str, Any]) -> dict[str, Any]:
    """Return a manifest declaring `jobs`."""
    return manifest(capabilities={"jobs": {"handlers": list(jobs)}})


def with_pages(
    *pages: dict[str, Any], navigation: list[dict[str, Any]] | None = None, **fields: Any
) -> dict[str, Any]:
    """Return a manifest declaring UI `pages` and `navigation`."""
    ui = {"pages": list(pages), "navigation": navigation or []}
    return manifest(capabilities={"ui": ui}, **fields)


def with_config(schema: dict[str, Any], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return a manifest whose `config` has `schema` and, if given, `defaults`."""
    config: dict[str, Any] = {"schema": schema}
    if defaults is not None:
        config["defaults"] = defaults
    return manifest(config=config)


def found(issues: list[Issue]) -> list[tuple[str, str]]:
    """Return the (path, code) of each issue, in the order reported."""
    return [(issue.path, issue.code) for issue in issues]


def only_error(result: ValidationResult, path: str, code: str) -> Issue:
    """Assert that `result` has exactly one error, at `path` with `code`; return it."""
    assert found(result.errors) == [(path, code)], result.public()
    assert not result.valid
    return result.errors[0]


def assert_mentions(issue: Issue, *fragments: object) -> None:
    """Assert that the message of `issue` names each fragment (value, field, bound)."""
    for fragment in fragments:
        assert str(fragment) in issue.message, (fragment, issue.message)
    # written for people: no Pydantic wording, no Python type names
    for jargon in ("Input should", "Value error", "pydantic", "NoneType", "<class"):
        assert jargon not in issue.message, issue.message
