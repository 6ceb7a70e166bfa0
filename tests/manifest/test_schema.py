"""The published JSON Schema: shipped as generated, and never stricter than the validator."""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modhub.manifest import manifest_schema, validate_manifest
from modhub.manifest.schema import SCHEMA_FILE, render_schema

from .helpers import JOBS, PAGES, ROUTES, SEEDS, job, load_fixture, manifest, page, route

SCHEMA = manifest_schema()
VALIDATOR = jsonschema_rs.validator_for(SCHEMA)


def schema_error_paths(document: Any) -> list[str]:
    """Return the JSON pointer of each place the JSON Schema rejects in `document`."""
    return [
        "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in e.instance_path)
        for e in VALIDATOR.iter_errors(document)
    ]


# --- the shipped file -----------------------------------------------------------------


def test_the_shipped_schema_is_the_generated_one() -> None:
    shipped = resources.files("modhub.manifest").joinpath(SCHEMA_FILE).read_text("utf-8")

    assert shipped == render_schema(), (
        f"src/modhub/manifest/{SCHEMA_FILE} is out of date with the models: run `make schema`"
    )


def test_the_loaded_schema_is_the_shipped_file() -> None:
    assert manifest_schema() == json.loads(render_schema())


def test_the_schema_is_a_draft_2020_12_schema_with_an_id() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["$id"].endswith("module.schema.json")
    assert jsonschema_rs.meta.is_valid(SCHEMA)
    assert isinstance(VALIDATOR, jsonschema_rs.Draft202012Validator)


def test_the_schema_uses_the_manifest_keys() -> None:
    assert SCHEMA["required"] == ["name", "version", "displayName"]
    assert SCHEMA["additionalProperties"] is False
    assert {"$schema", "displayName", "capabilities", "dependencies", "config"} <= set(
        SCHEMA["properties"]
    )


# --- the seed's manifests and wrong ones ----------------------------------------------


@pytest.mark.parametrize("fixture", SEEDS)
def test_seed_manifests_satisfy_the_schema(fixture: str) -> None:
    document = load_fixture(fixture)

    assert schema_error_paths(document) == []
    assert VALIDATOR.is_valid(document)


WRONG = [
    pytest.param({"version": "1.0.0", "displayName": "X"}, "/name", "required", id="no-name"),
    pytest.param(
        {"name": "my-module", "version": "1.0.0", "displayname": "X"},
        "/displayname",
        "unknown_field",
        id="misspelt-field",
    ),
    pytest.param(manifest(name="My_Module"), "/name", "invalid_name", id="bad-name"),
    pytest.param(manifest(version="v1.0.0"), "/version", "invalid_version", id="bad-version"),
    pytest.param(manifest(displayName=""), "/displayName", "too_short", id="empty-display-name"),
    pytest.param(
        manifest(permissions=["VMware"]), "/permissions/0", "invalid_permission", id="permission"
    ),
    pytest.param(
        manifest(capabilities={"api": {"routes": {}}}),
        ROUTES,
        "wrong_type",
        id="routes-not-array",
    ),
    pytest.param(
        manifest(capabilities={"api": {"routes": [route(method="get")]}}),
        f"{ROUTES}/0/method",
        "not_allowed",
        id="lowercase-method",
    ),
    pytest.param(
        manifest(capabilities={"api": {"routes": [{"method": "GET", "path": "/a"}]}}),
        f"{ROUTES}/0/handler",
        "required",
        id="route-without-handler",
    ),
    pytest.param(
        manifest(capabilities={"jobs": {"handlers": [job(timeout="300")]}}),
        f"{JOBS}/0/timeout",
        "wrong_type",
        id="string-timeout",
    ),
    pytest.param(
        manifest(capabilities={"jobs": {"handlers": [job(timeout=0)]}}),
        f"{JOBS}/0/timeout",
        "out_of_range",
        id="zero-timeout",
    ),
    pytest.param(
        manifest(capabilities={"jobs": {"handlers": [job(retries=11)]}}),
        f"{JOBS}/0/retries",
        "out_of_range",
        id="too-many-retries",
    ),
    pytest.param(
        manifest(capabilities={"ui": {"pages": [page(path="vmware")]}}),
        f"{PAGES}/0/path",
        "invalid_page_path",
        id="relative-page-path",
    ),
    pytest.param(
        manifest(config={"schema": {"host": {"type": "text"}}}),
        "/config/schema/host/type",
        "not_allowed",
        id="config-type",
    ),
    pytest.param(
        manifest(config={"schema": {"host": {"type": "string", "required": "yes"}}}),
        "/config/schema/host/required",
        "wrong_type",
        id="config-required-string",
    ),
    pytest.param(
        manifest(dependencies={"modules": {"core-auth": 1}}),
        "/dependencies/modules/core-auth",
        "wrong_type",
        id="range-not-string",
    ),
    pytest.param([], "", "wrong_type", id="not-an-object"),
]


@pytest.mark.parametrize(("document", "path", "code"), WRONG)
def test_structurally_wrong_manifests_are_refused_by_both(
    document: Any, path: str, code: str
) -> None:
    result = validate_manifest(document)
    schema_paths = schema_error_paths(document)

    assert (path, code) in [(e.path, e.code) for e in result.errors], result.public()
    assert not VALIDATOR.is_valid(document)
    # the schema points at the same place, or at the object holding the missing/extra key
    assert any(p in (path, path.rsplit("/", 1)[0]) for p in schema_paths), schema_paths


# --- the schema is never stricter than the validator ----------------------------------
#
# Manifests are built from building blocks, each with values the validator accepts and,
# unless `clean`, values it refuses. Clean manifests use every section, so that the
# property is exercised on rich documents the validator accepts, not only on small ones.

SAFE_INT = 2**53
DECLARED = ["vmware:read", "vmware:write", "vm:*", "core-auth:admin_all"]
SELF_NAMES = ["my-module", "ab", "a" * 64, "x1-y2"]
DEPENDENCY_NAMES = ["core-auth", "net-utils"]

json_numbers = st.integers(-SAFE_INT, SAFE_INT) | st.floats(
    allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15
)
json_scalars = st.none() | st.booleans() | json_numbers | st.text(max_size=8)
texts = st.text(max_size=12)
optional_texts = st.none() | texts


def objects(required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Return dictionaries with every `required` key and any of the `optional` ones."""
    return st.fixed_dictionaries(required, optional=optional)


class Blocks:
    """Strategies for the parts of a manifest; `clean` ones draw only accepted values."""

    def __init__(self, *, clean: bool) -> None:
        self.clean = clean

    def pick(self, good: list[Any], bad: list[Any]) -> st.SearchStrategy[Any]:
        return st.sampled_from(good if self.clean else good + bad)

    def either(
        self, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]
    ) -> st.SearchStrategy[Any]:
        return good if self.clean else good | bad

    def name(self) -> st.SearchStrategy[Any]:
        generated = st.from_regex(r"[a-z](?:[a-z0-9]|-[a-z0-9]){1,10}", fullmatch=True)
        return self.either(
            st.sampled_from(SELF_NAMES) | generated.filter(lambda n: n not in DEPENDENCY_NAMES),
            st.sampled_from(["My_Module", "a", "core-"]),
        )

    def route(self) -> st.SearchStrategy[Any]:
        return objects(
            {
                "method": self.pick(
                    ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"], ["get"]
                ),
                "path": self.pick(
                    ["/", "/vms", "/vms/:id", "/vms/{id}/disks/:disk", "/a.b"], ["vms"]
                ),
                "handler": self.handler(),
            },
            {"permissions": st.lists(self.permission(), max_size=2), "description": optional_texts},
        )

    def handler(self) -> st.SearchStrategy[Any]:
        return self.pick(
            ["handlers/a.py", "handlers/a.py:run", "a.py", "./b/c.py:go_1", "h.ts", "x.js"],
            ["../a.py", "/abs.py", "a.txt"],
        )

    def permission(self) -> st.SearchStrategy[Any]:
        return self.pick(DECLARED, ["Bad", "vmware:delete"])

    def job(self) -> st.SearchStrategy[Any]:
        return objects(
            {
                "name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,10}", fullmatch=True),
                "handler": self.handler(),
            },
            {
                "schedule": self.pick(
                    [None, "0 */6 * * *", "@hourly", "*/5 1 * * MON"], ["@reboot"]
                ),
                "timezone": self.pick([None, "UTC", "Europe/Paris"], ["Mars/Base"]),
                "timeout": self.either(
                    st.none() | st.sampled_from([1, 86_400_000]) | st.integers(1, 86_400_000),
                    st.sampled_from([0, 86_400_001, 300.0, "300"]),
                ),
                "retries": self.either(st.integers(0, 10), st.sampled_from([-1, 11, 1.5])),
                "misfire": st.sampled_from(["coalesce", "skip"]),
                "description": optional_texts,
            },
        )

    def page_path(self) -> st.SearchStrategy[Any]:
        return self.pick(["/", "/vmware", "/vmware/vms", "/a.b~c_d-e"], ["vmware", "/a/"])

    def page(self) -> st.SearchStrategy[Any]:
        return objects(
            {
                "path": self.page_path(),
                "component": self.pick(["p.js", "pages/D.tsx", "x/y.mjs"], ["../p.js"]),
                "title": texts,
            },
            {"icon": optional_texts, "permissions": st.lists(self.permission(), max_size=2)},
        )

    def navigation(self) -> st.SearchStrategy[Any]:
        return objects(
            {"label": texts, "path": self.page_path()},
            {"icon": optional_texts, "order": st.integers(-SAFE_INT, SAFE_INT)},
        )

    def config_field(self) -> st.SearchStrategy[Any]:
        return _coherent_config_field() | _random_config_field()

    def config_key(self) -> st.SearchStrategy[Any]:
        return st.sampled_from(["host", "port", "mode", "_secret", "a-b"]) | st.from_regex(
            r"[A-Za-z_][A-Za-z0-9_-]{0,8}", fullmatch=True
        )

    def manifest(self) -> st.SearchStrategy[Any]:
        least = 1 if self.clean else 0

        def section(fields: dict[str, Any]) -> st.SearchStrategy[Any]:
            return objects(fields, {}) if self.clean else objects({}, fields)

        ranges = self.pick(
            ["^1.0.0", "~1.2", "1.x", "*", "", ">=1.0.0 <2.0.0", "1.0.0 - 2.0.0", "^1 || ^2"],
            ["latest", ">>1"],
        )
        optional: dict[str, Any] = {
            "$schema": st.none() | st.just("https://modhub.dev/schemas/module.schema.json"),
            "description": optional_texts,
            "author": optional_texts,
            "license": optional_texts,
            "permissions": st.just(DECLARED)
            | st.lists(self.permission(), max_size=3, unique=not self.clean),
            "capabilities": section(
                {
                    "api": section(
                        {
                            "routes": st.lists(
                                self.route(), min_size=least, max_size=3, unique_by=_route_key
                            )
                        }
                    ),
                    "jobs": section(
                        {
                            "handlers": st.lists(
                                self.job(), min_size=least, max_size=2, unique_by=_name
                            )
                        }
                    ),
                    "ui": section(
                        {
                            "pages": st.lists(
                                self.page(), min_size=least, max_size=2, unique_by=_path
                            ),
                            "navigation": st.lists(self.navigation(), max_size=2),
                        }
                    ),
                }
            ),
            "dependencies": section(
                {
                    "modules": st.dictionaries(
                        st.sampled_from(DEPENDENCY_NAMES) | self.name(),
                        ranges,
                        min_size=least,
                        max_size=2,
                    ),
                    "npm": st.dictionaries(st.sampled_from(["left-pad", "@scope/pkg"]), ranges),
                    "system": st.dictionaries(st.sampled_from(["python", "node", "git"]), ranges),
                    "python": st.lists(self.pick(["httpx>=0.27", "pyvmomi"], ["==1"]), max_size=2),
                }
            ),
            "config": _coherent_config(self.config_key())
            if self.clean
            else section(
                {
                    "schema": st.dictionaries(self.config_key(), self.config_field(), max_size=3),
                    "defaults": st.dictionaries(self.config_key(), json_scalars, max_size=2),
                }
            ),
            "runtime": section(
                {
                    "memoryMb": st.none() | self.either(st.integers(32, 65_536), st.just(16)),
                    "timeoutMs": st.none() | self.either(st.integers(1, 600_000), st.just(0)),
                    "maxConcurrency": st.none() | st.integers(1, 1_000),
                    "storageMb": st.none() | self.either(st.integers(1, 65_536), st.just(0)),
                    "network": st.booleans(),
                }
            ),
            "metadata": objects(
                {},
                {
                    "homepage": optional_texts,
                    "repository": optional_texts,
                    "documentation": optional_texts,
                    "category": optional_texts,
                    "tags": st.lists(texts, max_size=3),
                    "stars": json_scalars,
                    "extra": st.dictionaries(texts, json_scalars, max_size=2),
                },
            ),
        }
        required = {
            "name": self.name(),
            "version": self.pick(
                ["1.0.0", "0.0.1", "10.20.30", "1.0.0-alpha.1", "1.0.0+build.5", "2.0.0-rc.1+x"],
                ["1.0", "v1.0.0"],
            ),
            "displayName": st.text(min_size=1, max_size=20),
        }
        if self.clean:
            required |= {key: optional.pop(key) for key in ("permissions", "capabilities")}
            required |= {key: optional.pop(key) for key in ("dependencies", "config")}
        return objects(required, optional)


def _route_key(item: dict[str, Any]) -> tuple[str, str]:
    return item["method"], item["path"]


def _name(item: dict[str, Any]) -> str:
    return str(item["name"])


def _path(item: dict[str, Any]) -> str:
    return str(item["path"])


option_values = st.text(max_size=4) | st.integers(-5, 5) | st.booleans() | st.floats(-5, 5)
options = option_values | objects({"value": option_values}, {"label": optional_texts})


def _random_config_field() -> st.SearchStrategy[Any]:
    """Return config fields whose parts are drawn independently: often inconsistent."""
    validation = objects(
        {},
        {
            "min": st.none() | json_numbers,
            "max": st.none() | json_numbers,
            "pattern": st.none() | st.sampled_from(["^\\d+$", "[a-z]+", "(", "^.{2,}$"]),
            "minLength": st.none() | st.integers(0, 10),
            "maxLength": st.none() | st.integers(0, 10),
        },
    )
    return objects(
        {"type": st.sampled_from(["string", "password", "number", "integer", "boolean", "select"])},
        {
            "label": optional_texts,
            "description": optional_texts,
            "required": st.booleans(),
            "default": json_scalars,
            "sensitive": st.booleans(),
            "options": st.none() | st.lists(options, max_size=3),
            "validation": st.none() | validation,
        },
    )


@st.composite
def _coherent_config_field(draw: st.DrawFn) -> dict[str, Any]:
    """Return a config field whose default, bounds and options agree with its type."""
    kind = draw(st.sampled_from(["string", "password", "number", "integer", "boolean", "select"]))
    field: dict[str, Any] = {"type": kind}
    for key, strategy in (("label", optional_texts), ("required", st.booleans())):
        if draw(st.booleans()):
            field[key] = draw(strategy)
    if kind in ("number", "integer"):
        numbers = st.integers(-1000, 1000) if kind == "integer" else json_numbers
        low, high = sorted([draw(numbers), draw(numbers)])
        field["validation"] = draw(
            st.sampled_from([{}, {"min": low}, {"max": high}, {"min": low, "max": high}])
        )
        field["default"] = draw(st.sampled_from([low, high]))
    elif kind in ("string", "password"):
        shortest, longest = sorted([draw(st.integers(0, 8)), draw(st.integers(0, 8))])
        field["validation"] = {"minLength": shortest, "maxLength": longest}
        if draw(st.booleans()):
            field["validation"]["pattern"] = "^a*$"
        field["default"] = "a" * shortest
    elif kind == "boolean":
        field["default"] = draw(st.booleans())
    else:
        values = draw(st.lists(option_values, min_size=1, max_size=3, unique_by=repr))
        field["options"] = [
            draw(st.sampled_from([value, {"value": value}, {"value": value, "label": "L"}]))
            for value in values
        ]
        field["default"] = draw(st.sampled_from(values))
    if draw(st.booleans()):
        del field["default"]
    return field


@st.composite
def _coherent_config(draw: st.DrawFn, keys: st.SearchStrategy[Any]) -> dict[str, Any]:
    """Return a config whose `defaults` repeat some of the fields' own defaults."""
    schema = draw(st.dictionaries(keys, _coherent_config_field(), min_size=1, max_size=3))
    defaults = {
        key: field["default"]
        for key, field in schema.items()
        if "default" in field and draw(st.booleans())
    }
    return {"schema": schema, "defaults": defaults}


def _in_own_namespace(document: dict[str, Any]) -> dict[str, Any]:
    """Return `document` with every permission's scope made the module's name, as a module
    may declare only its own permissions (`vmware:read` becomes `my-module:read`)."""

    def own(permissions: list[str]) -> list[str]:
        return [f"{document['name']}:{p.split(':', 1)[1]}" for p in permissions]

    document = copy.deepcopy(document)
    if "permissions" in document:
        document["permissions"] = own(document["permissions"])
    capabilities = document.get("capabilities", {})
    for item in [
        *capabilities.get("api", {}).get("routes", []),
        *capabilities.get("ui", {}).get("pages", []),
    ]:
        if "permissions" in item:
            item["permissions"] = own(item["permissions"])
    return document


manifests = Blocks(clean=False).manifest() | Blocks(clean=True).manifest().map(_in_own_namespace)


def _is_rich(document: dict[str, Any]) -> bool:
    capabilities = document.get("capabilities", {})
    return all(
        [
            capabilities.get("api", {}).get("routes"),
            capabilities.get("jobs", {}).get("handlers"),
            capabilities.get("ui", {}).get("pages"),
            document.get("config", {}).get("schema"),
            document.get("dependencies", {}).get("modules"),
        ]
    )


def test_a_manifest_the_validator_accepts_satisfies_the_schema() -> None:
    accepted: list[bool] = []

    @settings(
        max_examples=400,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(manifests)
    def check(document: dict[str, Any]) -> None:
        if validate_manifest(document).valid:
            assert VALIDATOR.is_valid(document), schema_error_paths(document)
            accepted.append(_is_rich(document))

    check()

    # the property says little unless the validator accepted documents using every part
    assert sum(accepted) >= 25, f"only {sum(accepted)} rich valid manifests were generated"
