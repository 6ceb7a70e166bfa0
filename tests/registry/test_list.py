"""Listing modules: filters, search and pages."""

from __future__ import annotations

import pytest

from modhub.registry import Registry, Status
from modhub.services import Services
from tests.registry.helpers import ACTOR, manifest


@pytest.fixture
def registry(services: Services) -> Registry:
    registry = services.registry
    registry.register(manifest("vmware-vcenter", displayName="VMware vCenter"), actor=ACTOR)
    registry.register(manifest("core-auth", description="Logins for 100% of users"), actor=ACTOR)
    registry.register(manifest("backup", displayName="Nightly_Backup"), actor=ACTOR)
    registry.register(manifest("dns"), actor=ACTOR)
    registry.set_status("dns", Status.ENABLED, actor=ACTOR)
    return registry


def names(registry: Registry, **query: object) -> list[str]:
    return [m.name for m in registry.list_modules(**query).items]  # type: ignore[arg-type]


def test_everything_by_name(registry: Registry) -> None:
    page = registry.list_modules()

    assert [m.name for m in page.items] == ["backup", "core-auth", "dns", "vmware-vcenter"]
    assert (page.total, page.limit, page.offset) == (4, 50, 0)


def test_filter_by_status(registry: Registry) -> None:
    assert names(registry, status=Status.ENABLED) == ["dns"]
    assert names(registry, status=Status.REGISTERED) == ["backup", "core-auth", "vmware-vcenter"]
    assert registry.list_modules(status=Status.DISABLED).total == 0


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("VMWARE", ["vmware-vcenter"]),  # name, any case
        ("vcenter", ["vmware-vcenter"]),
        ("nightly", ["backup"]),  # display name
        ("logins", ["core-auth"]),  # description
        ("100%", ["core-auth"]),
        ("%", ["core-auth"]),  # a literal percent sign, not a wildcard
        ("_", ["backup"]),  # a literal underscore, not a wildcard
        ("zzz", []),
    ],
)
def test_search(registry: Registry, q: str, expected: list[str]) -> None:
    assert names(registry, q=q) == expected


def test_search_and_status_together(registry: Registry) -> None:
    assert names(registry, q="d", status=Status.ENABLED) == ["dns"]


def test_pages(registry: Registry) -> None:
    first = registry.list_modules(limit=3)
    second = registry.list_modules(limit=3, offset=3)

    assert [m.name for m in first.items] == ["backup", "core-auth", "dns"]
    assert [m.name for m in second.items] == ["vmware-vcenter"]
    assert first.total == second.total == 4
    assert registry.list_modules(offset=10).items == []


def test_limit_is_clamped(registry: Registry) -> None:
    assert registry.list_modules(limit=0).limit == 1
    assert registry.list_modules(limit=10_000).limit == 500
