"""What a manifest may claim: permissions in its own namespace, requirements the server may
install (issue 11 items 3 and 13b)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modhub.auth.permissions import BUILTIN_ROLES, Permission
from modhub.manifest import validate_manifest, validate_path
from modhub.manifest.claims import RESERVED_SCOPES, own_scopes
from modhub.manifest.formats import requirement_problem

from .helpers import PAGES, SEEDS, found, load_fixture, manifest, page, route

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "modules"
SEED = Path(__file__).resolve().parents[3] / "shared" / "seed" / "000_a39e0a5e7b051e67.txt"


def requiring(*requirements: str) -> dict[str, Any]:
    return manifest(dependencies={"python": ["httpx>=0.27", *requirements]})


# --- local requirements: refused always -------------------------------------------------

LOCAL = [
    "localpkg @ /tmp/x.tar.gz",
    "x @ file:///tmp/x.whl",
    "x @ FILE:///tmp/x.whl",
    "x @ File://localhost/tmp/x.whl",
    "x @ file:/tmp/x.whl",
    "x @ file:x.whl",
    "x @ git+file:///srv/repo",
    "x @ GIT+FILE:///srv/repo",
    "x @ hg+file:///srv/repo",
    "x @ svn+file:///srv/repo",
    "x @ ./x.whl",
    "x @ ../x",
    "x @ .",
    "x @ ~/x.whl",
    "x @ x.tar.gz",
    "x @ C:\\x.whl",
    "x @ \\\\server\\share\\x.whl",
    "x @ //server/share/x.whl",
    "x @ %66ile:///tmp/x.whl",
    "x @ %2566ile:///tmp/x.whl",
    "x @ git+%66ile:///srv/repo",
    "x @ \tfile:///tmp/x.whl",
    "x@file:///tmp/x.whl",
    "x[extra] @ file:///tmp/x.whl ; python_version >= '3'",
    "x @ https:///tmp/x.whl",
    "x @ http:/tmp/x.whl",
    "x.whl",
    "localpkg.tar.gz",
]


@pytest.mark.parametrize("allowed", [False, True], ids=["default", "direct-allowed"])
@pytest.mark.parametrize("requirement", LOCAL)
def test_local_requirements_are_refused_in_every_spelling(requirement: str, allowed: bool) -> None:
    result = validate_manifest(requiring(requirement), allow_direct_references=allowed)

    assert found(result.errors) == [("/dependencies/python/1", "local_requirement")]
    assert requirement in result.errors[0].message
    assert requirement_problem(requirement, allow_direct_references=allowed) is not None


# --- direct references: refused unless the operator allows them -------------------------

DIRECT = [
    "x @ https://example.org/x-1.0-py3-none-any.whl",
    "x @ HTTPS://example.org/x-1.0.tar.gz",
    "x @ http://127.0.0.1:8000/x-1.0-py3-none-any.whl",
    "x @ git+https://example.org/x.git@v1.0",
    "x @ git+ssh://git@example.org/x.git",
    "x @ hg+https://example.org/x",
]


@pytest.mark.parametrize("requirement", DIRECT)
def test_direct_references_are_refused_by_default(requirement: str) -> None:
    result = validate_manifest(requiring(requirement))

    assert found(result.errors) == [("/dependencies/python/1", "direct_reference")]
    assert "MODHUB_PIP_ALLOW_DIRECT_REFERENCES" in result.errors[0].message
    assert requirement_problem(requirement) is not None


@pytest.mark.parametrize("requirement", DIRECT)
def test_direct_references_are_accepted_when_the_operator_allows_them(requirement: str) -> None:
    assert validate_manifest(requiring(requirement), allow_direct_references=True).valid
    assert requirement_problem(requirement, allow_direct_references=True) is None


@pytest.mark.parametrize(
    "requirement",
    [
        "x @ ftp://example.org/x.whl",
        "x @ data:text/plain,x",
        "x @ git+ftp://example.org/x",
        "x @ https:\\\\example.org\\x.whl",
    ],
)
def test_urls_modhub_does_not_install_from_are_refused(requirement: str) -> None:
    result = validate_manifest(requiring(requirement), allow_direct_references=True)

    assert found(result.errors) == [("/dependencies/python/1", "unsupported_url")]


def test_environment_variables_are_refused() -> None:
    # uv and pip expand ${VAR} in requirements files, after modhub checked the text
    result = validate_manifest(
        requiring("x @ https://example.org/${MODHUB_SECRET_KEY}.whl"), allow_direct_references=True
    )

    assert found(result.errors) == [("/dependencies/python/1", "invalid_requirement")]


@pytest.mark.parametrize("requirement", ["httpx", "httpx[http2]~=0.27", "pyvmomi>=8.0,<9"])
def test_requirements_by_name_are_accepted(requirement: str) -> None:
    assert validate_manifest(requiring(requirement)).valid
    assert requirement_problem(requirement) is None


def test_a_manifest_with_a_shape_error_still_has_its_requirements_checked() -> None:
    data = requiring("x @ FILE:///tmp/x.whl")
    data["version"] = "1.0"

    assert found(validate_manifest(data).errors) == [
        ("/dependencies/python/1", "local_requirement"),
        ("/version", "invalid_version"),
    ]


# --- permissions: the module's own namespace only ---------------------------------------


@pytest.mark.parametrize("permission", [*Permission, "modules:*", "users:read", "roles:admin"])
def test_platform_permissions_cannot_be_declared(permission: str) -> None:
    data = manifest(name="evil", permissions=["evil:read", permission])

    [error] = validate_manifest(data).errors
    assert (error.path, error.code) == ("/permissions/1", "foreign_permission")
    assert "reserved" in error.message


def test_a_family_named_like_a_platform_scope_gets_no_platform_permission() -> None:
    result = validate_manifest(
        manifest(name="users-sync", permissions=["users-sync:read", "users:admin"])
    )

    assert found(result.errors) == [("/permissions/1", "foreign_permission")]


@pytest.mark.parametrize(
    ("name", "permission"),
    [("hello", "vmware:read"), ("vmware-vcenter", "vcenter:read"), ("vm", "vmware:read")],
)
def test_another_modules_permissions_cannot_be_declared(name: str, permission: str) -> None:
    [error] = validate_manifest(manifest(name=name, permissions=[permission])).errors

    assert (error.path, error.code) == ("/permissions/0", "foreign_permission")
    assert f"'{name}'" in error.message


@pytest.mark.parametrize(
    ("name", "permission"),
    [
        ("hello", "hello:read"),
        ("vmware-vcenter", "vmware-vcenter:admin"),
        ("vmware-vcenter", "vmware:read"),  # the seed's example: the family before '-'
        ("vmware-vcenter", "vmware:*"),
    ],
)
def test_the_modules_own_permissions_can_be_declared(name: str, permission: str) -> None:
    assert validate_manifest(manifest(name=name, permissions=[permission])).valid


def test_a_route_or_page_cannot_require_a_platform_permission() -> None:
    data = manifest(
        name="evil",
        permissions=["modules:admin"],
        capabilities={
            "api": {"routes": [route(permissions=["modules:admin"])]},
            "ui": {"pages": [page(permissions=["users:admin"])]},
        },
    )

    # declared, the route's use is refused at the declaration; undeclared, the page's use
    assert sorted(found(validate_manifest(data).errors)) == [
        (f"{PAGES}/0/permissions/0", "undeclared_permission"),
        ("/permissions/0", "foreign_permission"),
    ]


def test_every_platform_permission_is_in_a_reserved_scope() -> None:
    scopes = {p.split(":", 1)[0] for p in Permission}
    scopes |= {p.split(":", 1)[0] for role in BUILTIN_ROLES.values() for p in role if ":" in p}

    assert scopes <= RESERVED_SCOPES
    assert own_scopes("modules-extra") == {"modules-extra"}


# --- what ships and what the seed shows stays valid -------------------------------------


@pytest.mark.parametrize("folder", sorted(p.name for p in EXAMPLES.iterdir()))
def test_the_example_modules_are_valid(folder: str) -> None:
    result = validate_path(EXAMPLES / folder)

    assert result.valid, result.errors


@pytest.mark.parametrize("fixture", SEEDS)
def test_the_seed_fixtures_are_valid(fixture: str) -> None:
    assert validate_manifest(load_fixture(fixture)).valid


def test_the_seeds_own_example_is_valid() -> None:
    if not SEED.is_file():
        pytest.skip(f"the seed spec is not beside the repository ({SEED})")
    text = SEED.read_text("utf-8")
    start = text.index('{\n  "name": "vmware-vcenter"')
    document = json.JSONDecoder().raw_decode(text[start:])[0]

    result = validate_manifest(document)

    assert result.valid, result.errors
    assert "vmware:read" in document["permissions"]
