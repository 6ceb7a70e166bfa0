"""`validate_manifest`: every rule of the manifest contract, reported with path and code."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modhub.manifest import validate_manifest

from .helpers import (
    JOBS,
    NAME,
    NAVIGATION,
    PAGES,
    ROUTES,
    SEEDS,
    assert_mentions,
    found,
    job,
    load_fixture,
    manifest,
    only_error,
    page,
    route,
    with_config,
    with_jobs,
    with_pages,
    with_routes,
)

# --- the seed's manifests -------------------------------------------------------------


@pytest.mark.parametrize("fixture", SEEDS)
def test_seed_manifests_are_valid(fixture: str) -> None:
    result = validate_manifest(load_fixture(fixture))

    assert result.valid, result.public()
    assert result.errors == []


def test_full_example_warns_about_what_modhub_cannot_run() -> None:
    result = validate_manifest(load_fixture("vmware-vcenter.json"))

    # Its .ts handlers run in the Node worker, its .tsx page is compiled at install.
    assert found(result.warnings) == [("/dependencies/npm/vmware-rest-api", "npm_dependency")]
    by_path = {w.path: w for w in result.warnings}
    assert_mentions(by_path["/dependencies/npm/vmware-rest-api"], "vmware-rest-api")


@pytest.mark.parametrize(
    ("fixture", "handler"),
    [("seed-test1.json", "handlers/hello.ts"), ("seed-test2.json", "handlers/status.ts")],
)
def test_curl_test_manifests_with_a_typescript_handler_have_no_warning(
    fixture: str, handler: str
) -> None:
    result = validate_manifest(load_fixture(fixture))

    assert handler in json.dumps(load_fixture(fixture))
    assert result.valid
    assert found(result.warnings) == []


def test_full_example_ported_to_python_has_no_warnings() -> None:
    data = load_fixture("vmware-vcenter.json")
    caps = data["capabilities"]
    caps["api"]["routes"][0]["handler"] = "handlers/list_vms.py"
    caps["api"]["routes"][1]["handler"] = "handlers/create_vm.py:create"
    caps["jobs"]["handlers"][0]["handler"] = "jobs/sync_inventory.py"
    caps["ui"]["pages"][0]["component"] = "pages/dashboard.js"
    data["dependencies"]["npm"] = {}
    data["dependencies"]["python"] = ["pyvmomi>=8.0"]

    result = validate_manifest(data)

    assert result.valid, result.public()
    assert result.warnings == []


def test_a_schema_reference_is_accepted() -> None:
    data = manifest(**{"$schema": "https://modhub.dev/schemas/module.schema.json"})

    assert validate_manifest(data).public() == {"valid": True, "errors": [], "warnings": []}


# --- name and version -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["ab", "my-module", "a1", "x2-y3-z4", "vmware-vcenter", "a" * 64])
def test_kebab_case_names_of_2_to_64_characters_are_valid(name: str) -> None:
    assert validate_manifest(manifest(name=name)).valid


@pytest.mark.parametrize(
    "name",
    [
        "a",  # too short
        "a" * 65,  # too long
        "",
        "My-Module",
        "my_module",
        "my.module",
        "my module",
        "-module",
        "module-",
        "my--module",
        "1module",
    ],
)
def test_names_that_are_not_kebab_case_are_refused(name: str) -> None:
    issue = only_error(validate_manifest(manifest(name=name)), "/name", "invalid_name")
    assert_mentions(issue, repr(name), "2-64")


@pytest.mark.parametrize(
    "version",
    [
        "1.0.0",
        "0.0.0",
        "10.20.30",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-0.3.7",
        "1.0.0-x.7.z.92",
        "1.0.0+20130313144700",
        "1.0.0-beta+exp.sha.5114f85",
        "2.1.0-rc.1+build.5",
    ],
)
def test_semver_versions_with_prerelease_and_build_are_valid(version: str) -> None:
    assert validate_manifest(manifest(version=version)).valid


@pytest.mark.parametrize(
    "version",
    [
        "1.0",
        "v1.0.0",
        "01.0.0",
        "1.01.0",
        "1",
        "1.0.0.0",
        "=1.0.0",
        " 1.0.0",
        "1.0.0-",
        "1.0.0+",
        "1.0.0-01",
        "1.0.0-alpha..1",
        "1.0.0-alpha_1",
    ],
)
def test_versions_that_are_not_strict_semver_are_refused(version: str) -> None:
    issue = only_error(validate_manifest(manifest(version=version)), "/version", "invalid_version")
    assert_mentions(issue, repr(version), "SemVer")


# --- unknown fields -------------------------------------------------------------------


def test_a_misspelt_top_level_field_is_refused_with_the_right_name() -> None:
    data = manifest()
    data["displayname"] = data.pop("displayName")

    result = validate_manifest(data)

    assert found(result.errors) == [
        ("/displayName", "required"),
        ("/displayname", "unknown_field"),
    ]
    assert_mentions(result.errors[1], "'displayname'", "did you mean 'displayName'")


def test_a_misspelt_route_field_is_refused_with_the_right_name() -> None:
    data = with_routes({"method": "GET", "path": "/vms", "handlr": "handlers/vms.py"})

    result = validate_manifest(data)

    assert found(result.errors) == [
        (f"{ROUTES}/0/handler", "required"),
        (f"{ROUTES}/0/handlr", "unknown_field"),
    ]
    assert_mentions(result.errors[0], "'handler'")
    assert_mentions(result.errors[1], "'handlr'", "did you mean 'handler'")


@pytest.mark.parametrize(
    ("data", "path", "suggestion"),
    [
        (manifest(dependancies={}), "/dependancies", "dependencies"),
        (manifest(permisions=[]), "/permisions", "permissions"),
        (manifest(capabilities={"apis": {}}), "/capabilities/apis", "api"),
        (with_jobs(job(retry=1)), f"{JOBS}/0/retry", "retries"),
        (
            with_config({"host": {"type": "string", "defualt": "x"}}),
            "/config/schema/host/defualt",
            "default",
        ),
        (
            with_config({"host": {"type": "string", "validation": {"minlength": 1}}}),
            "/config/schema/host/validation/minlength",
            "minLength",
        ),
        (with_pages(page(icn="server")), f"{PAGES}/0/icn", "icon"),
    ],
)
def test_misspelt_nested_fields_suggest_the_right_name(
    data: dict[str, Any], path: str, suggestion: str
) -> None:
    issue = only_error(validate_manifest(data), path, "unknown_field")
    assert_mentions(issue, path.rsplit("/", 1)[1], f"did you mean '{suggestion}'")


def test_an_unknown_field_without_a_close_name_lists_the_allowed_ones() -> None:
    issue = only_error(validate_manifest(manifest(zzzzzz=1)), "/zzzzzz", "unknown_field")
    assert_mentions(issue, "'zzzzzz'", "allowed:", "displayName", "capabilities")


# --- dependencies ---------------------------------------------------------------------

VALID_RANGES = [
    "^1.0.0",
    "~1.2.3",
    "~1.2",
    "1.x",
    "1.2.x",
    "*",
    "",
    ">=1.2.0 <2.0.0",
    ">= 1.2.3",
    "1.0.0 - 2.0.0",
    "1.2.3 - 2.3",
    "^1.0.0 || ^2.0.0",
    ">1.0.0 || <0.5.0 >=0.1.0",
    ">=1.0.0-beta.1",
    "<=2.0.0-beta.2",
    "1.0.0-rc.1",
    "=1.0.0",
    "^0.0.1",
]
INVALID_RANGES = ["latest", "not a range", ">>1", "1.2.3.4", "^^1", "=>1.0.0", "1.0.0 -", "1.x.3"]
DEPENDENCY_KINDS = [("modules", "core-auth"), ("npm", "left-pad"), ("system", "python")]


@pytest.mark.parametrize(("kind", "package"), DEPENDENCY_KINDS)
@pytest.mark.parametrize("version_range", VALID_RANGES)
def test_npm_ranges_are_accepted(kind: str, package: str, version_range: str) -> None:
    result = validate_manifest(manifest(dependencies={kind: {package: version_range}}))

    assert result.valid, result.public()


@pytest.mark.parametrize(("kind", "package"), DEPENDENCY_KINDS)
@pytest.mark.parametrize("version_range", INVALID_RANGES)
def test_malformed_ranges_are_refused(kind: str, package: str, version_range: str) -> None:
    result = validate_manifest(manifest(dependencies={kind: {package: version_range}}))

    issue = only_error(result, f"/dependencies/{kind}/{package}", "invalid_range")
    assert_mentions(issue, repr(version_range), "npm version range")


def test_a_package_name_with_a_slash_is_escaped_in_the_path() -> None:
    result = validate_manifest(manifest(dependencies={"npm": {"@scope/pkg": "latest"}}))

    assert found(result.errors) == [("/dependencies/npm/@scope~1pkg", "invalid_range")]
    assert found(result.warnings) == [("/dependencies/npm/@scope~1pkg", "npm_dependency")]


def test_a_module_dependency_needs_a_module_name() -> None:
    result = validate_manifest(manifest(dependencies={"modules": {"Core_Auth": "^1.0.0"}}))

    issue = only_error(result, "/dependencies/modules/Core_Auth", "invalid_name")
    assert_mentions(issue, "'Core_Auth'")


def test_npm_dependencies_are_valid_but_warned_about() -> None:
    result = validate_manifest(manifest(dependencies={"npm": {"left-pad": "^1.3.0"}}))

    assert result.valid
    assert found(result.warnings) == [("/dependencies/npm/left-pad", "npm_dependency")]
    assert_mentions(result.warnings[0], "left-pad", "dependencies.python")


@pytest.mark.parametrize(
    "requirement",
    [
        "httpx",
        "httpx>=0.27",
        "requests[socks]==2.31; python_version > '3.8'",
        "pyvmomi>=8.0,<9",
    ],
)
def test_pep_508_python_requirements_are_accepted(requirement: str) -> None:
    assert validate_manifest(manifest(dependencies={"python": [requirement]})).valid


@pytest.mark.parametrize("requirement", ["httpx >= ", "==1.0", "not valid!"])
def test_python_requirements_that_are_not_pep_508_are_refused(requirement: str) -> None:
    data = manifest(dependencies={"python": ["httpx>=0.27", requirement]})

    issue = only_error(validate_manifest(data), "/dependencies/python/1", "invalid_requirement")
    assert_mentions(issue, repr(requirement), "PEP 508")


def test_a_module_depending_on_itself_is_refused() -> None:
    data = manifest(dependencies={"modules": {"core-auth": "^1.0.0", NAME: "^1.0.0"}})

    issue = only_error(validate_manifest(data), f"/dependencies/modules/{NAME}", "self_dependency")
    assert_mentions(issue, NAME, "itself")


# --- routes ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
def test_http_methods_are_accepted(method: str) -> None:
    assert validate_manifest(with_routes(route(method=method))).valid


@pytest.mark.parametrize("method", ["FETCH", "get", "", "CONNECT"])
def test_unknown_route_methods_are_refused(method: str) -> None:
    result = validate_manifest(with_routes(route(method=method)))

    issue = only_error(result, f"{ROUTES}/0/method", "not_allowed")
    assert_mentions(issue, repr(method), "GET", "DELETE")


@pytest.mark.parametrize(
    "path", ["/", "/vms", "/vms/:id", "/vms/{id}", "/vms/{id}/disks/:disk", "/vms/new", "/a.b/c-d"]
)
def test_route_paths_with_either_parameter_syntax_are_accepted(path: str) -> None:
    assert validate_manifest(with_routes(route(path=path))).valid


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("vms", "start with '/'"),
        ("/vms/", "empty segment"),
        ("//vms", "empty segment"),
        ("/vms/:id/:id", "'id' appears twice"),
        ("/vms/:id/{id}", "'id' appears twice"),
        ("/vms/{id", "'{id'"),
        ("/vms/a:b", "'a:b'"),
        ("/vms/:1id", "':1id'"),
    ],
)
def test_malformed_route_paths_are_refused(path: str, reason: str) -> None:
    result = validate_manifest(with_routes(route(path=path)))

    issue = only_error(result, f"{ROUTES}/0/path", "invalid_route_path")
    assert_mentions(issue, repr(path), reason)


@pytest.mark.parametrize(
    ("first", "second"),
    [("/vms/:id", "/vms/{id}"), ("/vms/{id}", "/vms/:id"), ("/vms", "/vms")],
)
def test_the_same_route_declared_twice_is_refused(first: str, second: str) -> None:
    result = validate_manifest(with_routes(route(path=first), route(path=second)))

    issue = only_error(result, f"{ROUTES}/1/path", "duplicate_route")
    assert_mentions(issue, "GET", "routes/0")


def test_routes_with_the_same_path_and_different_methods_are_valid() -> None:
    data = with_routes(route(path="/vms/:id"), route(method="DELETE", path="/vms/{id}"))

    assert validate_manifest(data).valid


def test_paths_differing_only_in_parameter_names_are_ambiguous() -> None:
    result = validate_manifest(with_routes(route(path="/vms/:id"), route(path="/vms/:name")))

    issue = only_error(result, f"{ROUTES}/1/path", "ambiguous_route")
    assert_mentions(issue, "/vms/{name}", "/vms/{id}", "routes/0")


def test_a_literal_segment_beside_a_parameter_is_not_ambiguous() -> None:
    data = with_routes(route(path="/vms/:id"), route(path="/vms/new"))

    assert validate_manifest(data).valid


@pytest.mark.parametrize(
    "handler",
    [
        "handlers/vms.py",
        "handlers/vms.py:list_vms",
        "vms.py",
        "./handlers/vms.py",
        "handlers/v1/vms.py:run",
    ],
)
def test_relative_python_handlers_are_accepted(handler: str) -> None:
    result = validate_manifest(with_routes(route(handler=handler)))

    assert result.public() == {"valid": True, "errors": [], "warnings": []}


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        ("/srv/handlers/vms.py", "absolute"),
        ("C:/handlers/vms.py", "absolute"),
        ("../vms.py", "'..'"),
        ("handlers/../../vms.py", "'..'"),
        ("handlers/", "folder"),
        ("handlers/.", "folder"),
        (".", "folder"),
        ("", "empty"),
        (":run", "empty"),
        ("handlers\\vms.py", "forward slashes"),
        ("handlers/vms.py:1run", "identifier"),
        ("handlers/vms.py:", "identifier"),
        ("handlers/vms.txt", ".py"),
    ],
)
def test_handlers_outside_the_module_or_without_a_file_are_refused(
    handler: str, reason: str
) -> None:
    result = validate_manifest(with_routes(route(handler=handler)))

    issue = only_error(result, f"{ROUTES}/0/handler", "invalid_handler")
    assert_mentions(issue, handler, reason)


def test_job_handlers_follow_the_same_rules() -> None:
    result = validate_manifest(with_jobs(job(handler="../jobs/sync.py")))

    issue = only_error(result, f"{JOBS}/0/handler", "invalid_handler")
    assert_mentions(issue, "../jobs/sync.py")


@pytest.mark.parametrize(
    "handler", ["handlers/vms.ts", "handlers/vms.mts", "handlers/vms.js", "handlers/vms.mjs:list"]
)
def test_typescript_and_javascript_handlers_are_valid(handler: str) -> None:
    result = validate_manifest(with_routes(route(handler=handler)))

    assert result.valid
    assert found(result.warnings) == []


@pytest.mark.parametrize("handler", ["handlers/vms.tsx", "handlers/vms.jsx", "handlers/vms.cjs"])
def test_jsx_and_commonjs_handlers_are_valid_with_a_warning(handler: str) -> None:
    result = validate_manifest(with_routes(route(handler=handler)))

    assert result.valid
    assert found(result.warnings) == [(f"{ROUTES}/0/handler", "handler_not_python")]
    assert_mentions(result.warnings[0], handler)


def test_a_handler_of_another_language_is_refused() -> None:
    result = validate_manifest(with_routes(route(handler="handlers/vms.rb")))

    issue = only_error(result, f"{ROUTES}/0/handler", "invalid_handler")
    assert_mentions(issue, "handlers/vms.rb", ".ts")


# --- permissions ----------------------------------------------------------------------


# Declared permissions are in the module's namespace (see test_claims.py): `vmware-vcenter`
# declares `vmware:…`, as in the seed.
VMWARE = "vmware-vcenter"


@pytest.mark.parametrize(
    ("name", "permission"),
    [
        (VMWARE, "vmware:read"),
        (VMWARE, "vmware:*"),
        ("core-auth", "core-auth:admin_all"),
        ("a-b", "a:b"),
    ],
)
def test_scope_action_permissions_are_accepted(name: str, permission: str) -> None:
    assert validate_manifest(manifest(name=name, permissions=[permission])).valid


@pytest.mark.parametrize(
    "permission", ["vmware", "VMware:Read", "vmware:read:all", ":read", "vmware:", "vm ware:read"]
)
def test_permissions_not_of_the_form_scope_action_are_refused(permission: str) -> None:
    result = validate_manifest(manifest(name=VMWARE, permissions=["vmware:read", permission]))

    issue = only_error(result, "/permissions/1", "invalid_permission")
    assert_mentions(issue, repr(permission), "scope:action")


def test_a_permission_declared_twice_is_refused() -> None:
    data = manifest(name=VMWARE, permissions=["vmware:read", "vmware:write", "vmware:read"])

    issue = only_error(validate_manifest(data), "/permissions/2", "duplicate_permission")
    assert_mentions(issue, "'vmware:read'")


def test_a_route_using_an_undeclared_permission_is_refused() -> None:
    data = with_routes(
        route(permissions=["vmware:read", "vmware:write"]),
        name=VMWARE,
        permissions=["vmware:read"],
    )

    issue = only_error(
        validate_manifest(data), f"{ROUTES}/0/permissions/1", "undeclared_permission"
    )
    assert_mentions(issue, "'vmware:write'", "permissions")


def test_a_page_using_an_undeclared_permission_is_refused() -> None:
    data = with_pages(page(permissions=["vmware:admin"]), name=VMWARE, permissions=["vmware:read"])

    issue = only_error(validate_manifest(data), f"{PAGES}/0/permissions/0", "undeclared_permission")
    assert_mentions(issue, "'vmware:admin'")


def test_permissions_used_and_declared_are_valid() -> None:
    data = with_routes(route(permissions=["vmware:read"]), name=VMWARE, permissions=["vmware:read"])

    assert validate_manifest(data).valid


def test_a_malformed_permissions_list_is_the_only_permission_error() -> None:
    # the declared permissions are unknown, so uses of them are not reported as undeclared
    data = with_routes(route(permissions=["vmware:read"]), permissions="vmware:read")

    issue = only_error(validate_manifest(data), "/permissions", "wrong_type")
    assert_mentions(issue, "an array", "not a string")


# --- jobs -----------------------------------------------------------------------------


def test_two_jobs_with_one_name_are_refused() -> None:
    data = with_jobs(job(name="sync"), job(name="cleanup"), job(name="sync"))

    issue = only_error(validate_manifest(data), f"{JOBS}/2/name", "duplicate_job")
    assert_mentions(issue, "'sync'", "handlers/0")


@pytest.mark.parametrize(
    "schedule",
    [
        "0 */6 * * *",
        "*/5 * * * *",
        "0 0 * * MON",
        "30 2 1,15 * *",
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
    ],
)
def test_five_field_cron_and_macros_are_accepted(schedule: str) -> None:
    assert validate_manifest(with_jobs(job(schedule=schedule))).valid


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        ("0 0 * * * *", "found 6"),
        ("* * * *", "found 4"),
        ("", "found 0"),
        ("@reboot", "unknown macro"),
        ("@every 5m", "unknown macro"),
        ("61 * * * *", "out of range"),
        ("0 25 * * *", "out of range"),
    ],
)
def test_invalid_cron_expressions_are_refused(schedule: str, reason: str) -> None:
    result = validate_manifest(with_jobs(job(schedule=schedule)))

    issue = only_error(result, f"{JOBS}/0/schedule", "invalid_cron")
    assert_mentions(issue, repr(schedule), reason)


@pytest.mark.parametrize("timeout", [1, 300_000, 86_400_000])
def test_timeouts_up_to_a_day_are_accepted(timeout: int) -> None:
    assert validate_manifest(with_jobs(job(timeout=timeout))).valid


@pytest.mark.parametrize(
    ("timeout", "bound"), [(0, "greater than 0"), (-1, "greater than 0"), (86_400_001, "86400000")]
)
def test_timeouts_not_above_zero_or_over_a_day_are_refused(timeout: int, bound: str) -> None:
    issue = only_error(
        validate_manifest(with_jobs(job(timeout=timeout))), f"{JOBS}/0/timeout", "out_of_range"
    )
    assert_mentions(issue, bound)


@pytest.mark.parametrize("retries", [0, 3, 10])
def test_retries_from_0_to_10_are_accepted(retries: int) -> None:
    assert validate_manifest(with_jobs(job(retries=retries))).valid


@pytest.mark.parametrize(("retries", "bound"), [(-1, "0"), (11, "10")])
def test_retries_outside_0_to_10_are_refused(retries: int, bound: str) -> None:
    issue = only_error(
        validate_manifest(with_jobs(job(retries=retries))), f"{JOBS}/0/retries", "out_of_range"
    )
    assert_mentions(issue, bound)


def test_an_unknown_time_zone_is_refused() -> None:
    result = validate_manifest(with_jobs(job(schedule="@daily", timezone="Mars/Olympus")))

    issue = only_error(result, f"{JOBS}/0/timezone", "invalid_timezone")
    assert_mentions(issue, "'Mars/Olympus'")


# --- ui -------------------------------------------------------------------------------


def test_two_pages_with_one_path_are_refused() -> None:
    data = with_pages(page(path="/vmware"), page(path="/vmware/vms"), page(path="/vmware"))

    issue = only_error(validate_manifest(data), f"{PAGES}/2/path", "duplicate_page")
    assert_mentions(issue, "/vmware", "pages/0")


@pytest.mark.parametrize("path", ["vmware", "vmware/vms", "", "/vmware/", "/a//b", "/vm ware"])
def test_page_paths_that_are_not_absolute_are_refused(path: str) -> None:
    issue = only_error(
        validate_manifest(with_pages(page(path=path))), f"{PAGES}/0/path", "invalid_page_path"
    )
    assert_mentions(issue, repr(path), "absolute")


@pytest.mark.parametrize(
    ("component", "reason"),
    [
        ("/srv/pages/dashboard.js", "absolute"),
        ("../dashboard.js", "'..'"),
        ("pages/../../dashboard.js", "'..'"),
        ("pages/", "folder"),
        ("", "empty"),
    ],
)
def test_components_outside_the_module_are_refused(component: str, reason: str) -> None:
    result = validate_manifest(with_pages(page(component=component)))

    issue = only_error(result, f"{PAGES}/0/component", "invalid_component")
    assert_mentions(issue, repr(component), reason)


@pytest.mark.parametrize("component", ["pages/D.tsx", "pages/D.jsx", "pages/D.ts", "pages/D.mts"])
def test_a_tsx_component_is_valid_it_is_compiled_at_install(component: str) -> None:
    result = validate_manifest(with_pages(page(component=component)))

    assert result.valid
    assert found(result.warnings) == []


def test_a_component_the_console_cannot_load_is_valid_with_a_warning() -> None:
    result = validate_manifest(with_pages(page(component="pages/Dashboard.vue")))

    assert result.valid
    assert found(result.warnings) == [(f"{PAGES}/0/component", "component_not_javascript")]


def test_navigation_to_an_undeclared_page_is_a_warning() -> None:
    navigation = [{"label": "VMware", "path": "/vmware"}, {"label": "Hosts", "path": "/hosts"}]

    result = validate_manifest(with_pages(page(path="/vmware"), navigation=navigation))

    assert result.valid
    assert result.errors == []
    assert found(result.warnings) == [(f"{NAVIGATION}/1/path", "unknown_navigation_target")]
    assert_mentions(result.warnings[0], "'Hosts'", "/hosts")


# --- config ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["string", "password", "number", "integer", "boolean"])
def test_known_config_types_are_accepted(kind: str) -> None:
    assert validate_manifest(with_config({"field": {"type": kind}})).valid


def test_an_unknown_config_type_is_refused() -> None:
    result = validate_manifest(with_config({"host": {"type": "text"}}))

    issue = only_error(result, "/config/schema/host/type", "not_allowed")
    assert_mentions(issue, "'text'", "'string'", "'select'")


@pytest.mark.parametrize(
    ("kind", "default", "expected"),
    [
        ("number", "6", "a number"),
        ("number", True, "a number"),
        ("integer", 1.5, "whole number"),
        ("boolean", "yes", "true or false"),
        ("string", 5, "a string"),
        ("password", False, "a string"),
    ],
)
def test_a_default_of_the_wrong_type_is_refused(kind: str, default: Any, expected: str) -> None:
    result = validate_manifest(with_config({"field": {"type": kind, "default": default}}))

    issue = only_error(result, "/config/schema/field/default", "invalid_default")
    assert_mentions(issue, "default", expected)


@pytest.mark.parametrize(
    ("kind", "default"),
    [("number", 6), ("number", 0.5), ("integer", 3), ("boolean", False), ("string", "")],
)
def test_a_default_of_the_right_type_is_accepted(kind: str, default: Any) -> None:
    assert validate_manifest(with_config({"field": {"type": kind, "default": default}})).valid


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"type": "number", "default": 30, "validation": {"min": 1, "max": 24}}, "at most 24"),
        ({"type": "integer", "default": 0, "validation": {"min": 1}}, "at least 1"),
        ({"type": "string", "default": "ab", "validation": {"minLength": 3}}, "at least 3"),
        ({"type": "string", "default": "abcd", "validation": {"maxLength": 3}}, "at most 3"),
        ({"type": "string", "default": "abc", "validation": {"pattern": "^\\d+$"}}, "^\\d+$"),
    ],
)
def test_a_default_outside_its_validation_is_refused(spec: dict[str, Any], reason: str) -> None:
    result = validate_manifest(with_config({"field": spec}))

    issue = only_error(result, "/config/schema/field/default", "invalid_default")
    assert_mentions(issue, "default", reason)


def test_a_default_on_the_bounds_is_accepted() -> None:
    schema = {
        "low": {"type": "number", "default": 1, "validation": {"min": 1, "max": 24}},
        "high": {"type": "number", "default": 24, "validation": {"min": 1, "max": 24}},
        "text": {"type": "string", "default": "123", "validation": {"pattern": "^\\d+$"}},
    }

    assert validate_manifest(with_config(schema)).valid


def test_a_value_in_defaults_is_checked_against_its_field() -> None:
    data = with_config(
        {"syncInterval": {"type": "number", "validation": {"min": 1, "max": 24}}},
        defaults={"syncInterval": 30},
    )

    issue = only_error(validate_manifest(data), "/config/defaults/syncInterval", "invalid_default")
    assert_mentions(issue, "'syncInterval'", "at most 24")


@pytest.mark.parametrize(
    ("validation", "path", "names"),
    [
        ({"min": 10, "max": 1}, "min", ("min (10)", "max (1)")),
        ({"minLength": 5, "maxLength": 2}, "minLength", ("minLength (5)", "maxLength (2)")),
    ],
)
def test_a_minimum_above_the_maximum_is_refused(
    validation: dict[str, int], path: str, names: tuple[str, str]
) -> None:
    kind = "number" if "min" in validation else "string"
    result = validate_manifest(with_config({"field": {"type": kind, "validation": validation}}))

    issue = only_error(result, f"/config/schema/field/validation/{path}", "min_greater_than_max")
    assert_mentions(issue, *names)


def test_a_pattern_that_does_not_compile_is_refused() -> None:
    result = validate_manifest(
        with_config({"host": {"type": "string", "validation": {"pattern": "[a-"}}})
    )

    issue = only_error(result, "/config/schema/host/validation/pattern", "invalid_pattern")
    assert_mentions(issue, "'[a-'", "does not compile")


@pytest.mark.parametrize("pattern", ["(a)\\1", "^(?=a)a$", "(?<!x)y", "a++"])
def test_a_pattern_that_needs_backtracking_is_refused(pattern: str) -> None:
    # RE2 matches in linear time because it has no backreferences or lookaround.
    result = validate_manifest(
        with_config({"host": {"type": "string", "validation": {"pattern": pattern}}})
    )

    issue = only_error(result, "/config/schema/host/validation/pattern", "invalid_pattern")
    assert_mentions(issue, "RE2")


def test_a_catastrophic_pattern_checks_its_default_in_linear_time() -> None:
    # With a backtracking engine this default takes about 2**64 steps: it never ends.
    pattern, default = "^(a+)+$", "a" * 64 + "!"
    result = validate_manifest(
        with_config(
            {"name": {"type": "string", "default": default, "validation": {"pattern": pattern}}}
        )
    )

    issue = only_error(result, "/config/schema/name/default", "invalid_default")
    assert_mentions(issue, "must match the pattern")


@pytest.mark.parametrize("spec", [{"type": "select"}, {"type": "select", "options": []}])
def test_a_select_without_options_is_refused(spec: dict[str, Any]) -> None:
    result = validate_manifest(with_config({"mode": spec}))

    issue = only_error(result, "/config/schema/mode/options", "missing_options")
    assert_mentions(issue, "select", "'options'")


@pytest.mark.parametrize(
    ("options", "default"),
    [(["fast", "safe"], "slow"), ([1, 2], 3), ([1, 2], True), ([{"value": 1, "label": "one"}], 2)],
)
def test_a_select_default_not_among_its_options_is_refused(
    options: list[Any], default: Any
) -> None:
    result = validate_manifest(
        with_config({"mode": {"type": "select", "options": options, "default": default}})
    )

    issue = only_error(result, "/config/schema/mode/default", "invalid_default")
    assert_mentions(issue, "default", "one of")


@pytest.mark.parametrize(
    ("options", "default"),
    [(["fast", "safe"], "safe"), ([1, 2], 2), ([{"value": 1, "label": "one"}, {"value": 2}], 1)],
)
def test_a_select_default_among_its_options_is_accepted(options: list[Any], default: Any) -> None:
    data = with_config({"mode": {"type": "select", "options": options, "default": default}})

    assert validate_manifest(data).valid


def test_a_select_repeating_an_option_is_refused() -> None:
    result = validate_manifest(with_config({"mode": {"type": "select", "options": ["a", "a"]}}))

    only_error(result, "/config/schema/mode/options", "duplicate_option")


@pytest.mark.parametrize(
    ("kind", "keyword", "value"),
    [
        ("number", "pattern", "^\\d+$"),
        ("integer", "minLength", 1),
        ("string", "min", 1),
        ("password", "max", 10),
        ("boolean", "maxLength", 3),
        ("select", "min", 0),
    ],
)
def test_validation_keywords_that_do_not_fit_the_type_are_refused(
    kind: str, keyword: str, value: Any
) -> None:
    spec: dict[str, Any] = {"type": kind, "validation": {keyword: value}}
    if kind == "select":
        spec["options"] = ["a"]

    result = validate_manifest(with_config({"field": spec}))

    issue = only_error(
        result, f"/config/schema/field/validation/{keyword}", "validation_not_applicable"
    )
    assert_mentions(issue, f"'{keyword}'", kind)


def test_options_on_a_field_that_is_not_a_select_are_refused() -> None:
    result = validate_manifest(with_config({"mode": {"type": "string", "options": ["a"]}}))

    issue = only_error(result, "/config/schema/mode/options", "validation_not_applicable")
    assert_mentions(issue, "'options'", "string")


def test_defaults_naming_an_undeclared_key_are_refused() -> None:
    data = with_config({"host": {"type": "string"}}, defaults={"host": "vc.local", "port": 443})

    issue = only_error(validate_manifest(data), "/config/defaults/port", "unknown_config_key")
    assert_mentions(issue, "'port'", "config.schema")


def test_a_config_key_must_be_an_identifier() -> None:
    result = validate_manifest(with_config({"bad key!": {"type": "string"}}))

    issue = only_error(result, "/config/schema/bad key!", "invalid_format")
    assert_mentions(issue, "'bad key!'")


# --- type strictness ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path", "expected", "actual"),
    [
        (with_jobs(job(timeout="300")), f"{JOBS}/0/timeout", "whole number", "a string"),
        (with_jobs(job(retries=1.5)), f"{JOBS}/0/retries", "whole number", "a number"),
        (with_jobs(job(retries=True)), f"{JOBS}/0/retries", "whole number", "a boolean"),
        (
            with_config({"host": {"type": "string", "required": "yes"}}),
            "/config/schema/host/required",
            "true or false",
            "a string",
        ),
        (
            with_pages(page(), navigation=[{"label": "VMware", "path": "/vmware", "order": "10"}]),
            f"{NAVIGATION}/0/order",
            "whole number",
            "a string",
        ),
        (manifest(displayName=5), "/displayName", "a string", "a number"),
        (manifest(version=1), "/version", "a string", "a number"),
        (manifest(permissions="vmware:read"), "/permissions", "an array", "a string"),
        (manifest(capabilities=[]), "/capabilities", "an object", "an array"),
        (with_routes(route(), "GET /vms"), f"{ROUTES}/1", "an object", "a string"),
        (manifest(runtime={"network": "true"}), "/runtime/network", "true or false", "a string"),
        (
            manifest(dependencies={"modules": {"core-auth": 1}}),
            "/dependencies/modules/core-auth",
            "a string",
            "a number",
        ),
    ],
)
def test_values_of_the_wrong_json_type_are_refused(
    data: dict[str, Any], path: str, expected: str, actual: str
) -> None:
    issue = only_error(validate_manifest(data), path, "wrong_type")
    assert_mentions(issue, expected, f"not {actual}")


def test_a_value_matching_no_form_of_a_union_is_one_error() -> None:
    data = with_config({"mode": {"type": "select", "options": [["a"]]}})

    issue = only_error(validate_manifest(data), "/config/schema/mode/options/0", "wrong_type")
    assert_mentions(issue, "a string", "a number", "an object")


@pytest.mark.parametrize("data", [[], "module", 42, None])
def test_a_manifest_that_is_not_an_object_is_refused(data: object) -> None:
    issue = only_error(validate_manifest(data), "", "wrong_type")
    assert_mentions(issue, "object")


def test_missing_required_fields_are_each_reported() -> None:
    result = validate_manifest({})

    assert found(result.errors) == [
        ("/displayName", "required"),
        ("/name", "required"),
        ("/version", "required"),
    ]
    assert_mentions(result.errors[1], "'name'", "required")


# --- everything at once ---------------------------------------------------------------


def test_every_error_is_reported_in_one_call() -> None:
    data: dict[str, Any] = {
        "name": NAME,
        "version": "1.0",
        "displayName": "My Module",
        "descripton": "a typo",
        "permissions": ["my-module:read", "my-module:read", "VMware", "users:admin"],
        "capabilities": {
            "api": {
                "routes": [
                    route(path="/vms/:id", permissions=["my-module:read"]),
                    route(path="/vms/{id}"),
                    route(method="FETCH", path="/other"),
                    route(path="/vms", permissions=["my-module:write"]),
                    route(path="/escape", handler="../escape.py"),
                ]
            },
            "jobs": {
                "handlers": [
                    job(name="sync", schedule="@hourly"),
                    job(name="sync"),
                    job(name="clean", schedule="0 0 * * * *"),
                    job(name="purge", timeout="300"),
                ]
            },
            "ui": {
                "pages": [page(path="/vmware"), page(path="/vmware")],
                "navigation": [{"label": "Hosts", "path": "/hosts"}],
            },
        },
        "dependencies": {
            "modules": {NAME: "^1.0.0", "core-auth": "latest"},
            "python": ["==1.0", "x @ FILE:///tmp/x.whl"],
        },
        "config": {
            "schema": {
                "interval": {"type": "number", "validation": {"min": 10, "max": 1}},
                "mode": {"type": "select"},
                "retries": {"type": "integer", "required": "yes"},
            },
            "defaults": {"ghost": 1},
        },
    }

    result = validate_manifest(data)

    assert not result.valid
    assert sorted(found(result.errors)) == sorted(
        [
            # shape, from the models
            ("/version", "invalid_version"),
            ("/descripton", "unknown_field"),
            ("/permissions/2", "invalid_permission"),
            (f"{ROUTES}/2/method", "not_allowed"),
            (f"{ROUTES}/4/handler", "invalid_handler"),
            (f"{JOBS}/2/schedule", "invalid_cron"),
            (f"{JOBS}/3/timeout", "wrong_type"),
            ("/dependencies/modules/core-auth", "invalid_range"),
            ("/dependencies/python/0", "invalid_requirement"),
            ("/config/schema/retries/required", "wrong_type"),
            # rules across fields, on the parts that are well formed
            ("/permissions/1", "duplicate_permission"),
            ("/permissions/3", "foreign_permission"),
            ("/dependencies/python/1", "local_requirement"),
            (f"{ROUTES}/1/path", "duplicate_route"),
            (f"{ROUTES}/3/permissions/0", "undeclared_permission"),
            (f"{JOBS}/1/name", "duplicate_job"),
            (f"{PAGES}/1/path", "duplicate_page"),
            (f"/dependencies/modules/{NAME}", "self_dependency"),
            ("/config/schema/interval/validation/min", "min_greater_than_max"),
            ("/config/schema/mode/options", "missing_options"),
            ("/config/defaults/ghost", "unknown_config_key"),
        ]
    )
    assert (f"{NAVIGATION}/0/path", "unknown_navigation_target") in found(result.warnings)


def test_errors_are_ordered_by_path_with_numeric_indexes() -> None:
    routes = [route(path=f"/r{i}") for i in range(12)]
    routes[10]["method"] = "get"
    routes[2]["method"] = "get"

    result = validate_manifest(with_routes(*routes, version="x"))

    assert [e.path for e in result.errors] == [
        f"{ROUTES}/2/method",
        f"{ROUTES}/10/method",
        "/version",
    ]


# --- the result -----------------------------------------------------------------------


def test_public_shape_of_an_invalid_result() -> None:
    data = with_routes(route(handler="handlers/vms.tsx"), route(method="get"))

    public = validate_manifest(data).public()

    assert set(public) == {"valid", "errors", "warnings"}
    assert public["valid"] is False
    assert public["errors"] == [
        {
            "path": f"{ROUTES}/1/method",
            "code": "not_allowed",
            "message": public["errors"][0]["message"],
        }
    ]
    assert public["warnings"] == [
        {
            "path": f"{ROUTES}/0/handler",
            "code": "handler_not_python",
            "message": public["warnings"][0]["message"],
        }
    ]
    for issue in [*public["errors"], *public["warnings"]]:
        assert set(issue) == {"path", "code", "message"}
        assert all(isinstance(value, str) and value for value in issue.values())
    assert json.loads(json.dumps(public)) == public


def test_public_shape_of_a_valid_result() -> None:
    public = validate_manifest(load_fixture("vmware-vcenter.json")).public()

    assert list(public) == ["valid", "errors", "warnings"]
    assert public["valid"] is True
    assert public["errors"] == []
    assert len(public["warnings"]) == 1
    assert all(set(w) == {"path", "code", "message"} for w in public["warnings"])


def test_validation_does_not_change_the_document() -> None:
    data = load_fixture("vmware-vcenter.json")
    data["capabilities"]["api"]["routes"][0]["path"] = "/vms/:id"
    before = copy.deepcopy(data)

    validate_manifest(data)

    assert data == before


# --- robustness -----------------------------------------------------------------------

_EXAMPLE = load_fixture("vmware-vcenter.json")


def _locations(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found_here = [prefix] if prefix else []
    if isinstance(value, dict):
        children = value.items()
    elif isinstance(value, list):
        children = enumerate(value)
    else:
        return found_here
    return found_here + [
        loc for key, child in children for loc in _locations(child, (*prefix, key))
    ]


def _resolves(document: Any, pointer: str) -> bool:
    current = document
    for raw in pointer.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return False
    return True


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.sampled_from([".", "..", "/", "a.py:x", "@hourly", "^1.0.0", "x:y", "/a/:b", "select"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.text(max_size=5) | st.sampled_from(["type", "value", "default", "options", "path"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(location=st.sampled_from(_locations(_EXAMPLE)), value=_json)
def test_any_value_anywhere_is_reported_not_raised(
    location: tuple[str | int, ...], value: Any
) -> None:
    data = copy.deepcopy(_EXAMPLE)
    parent = data
    for part in location[:-1]:
        parent = parent[part]
    parent[location[-1]] = value

    result = validate_manifest(data)

    public = result.public()
    assert json.loads(json.dumps(public)) == public
    for issue in [*result.errors, *result.warnings]:
        # every issue names a place in the document, or a missing key of an object in it
        parent_pointer = issue.path.rsplit("/", 1)[0]
        assert _resolves(data, issue.path) or _resolves(data, parent_pointer), issue
        assert issue.message


@pytest.mark.parametrize("key", ["¹", "²3", "٣"])
def test_keys_that_look_like_digits_are_reported_not_crashed_on(key: str) -> None:
    # Errors are sorted by path, numeric segments as numbers: "¹".isdigit() is true
    # but int("¹") fails, which made POST /modules/validate answer 500 (schemathesis).
    result = validate_manifest({**manifest(), key: 1, "zzz": 2})

    assert not result.valid
    paths = [issue.path for issue in result.errors]
    assert f"/{key}" in paths
    assert "/zzz" in paths
