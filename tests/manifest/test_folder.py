"""Folder mode: a module folder's handler and component files must exist inside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modhub.manifest import validate_manifest, validate_path

from .helpers import (
    JOBS,
    PAGES,
    ROUTES,
    assert_mentions,
    found,
    job,
    manifest,
    only_error,
    page,
    route,
)


def module_folder(root: Path, files: list[str], **fields: Any) -> Path:
    """Write a module folder holding `module.json` and empty `files`; return it."""
    folder = root / "my-module"
    folder.mkdir()
    (folder / "module.json").write_text(json.dumps(manifest(**fields)), "utf-8")
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("def handler(request):\n    return {}\n", "utf-8")
    return folder


CAPABILITIES = {
    "api": {
        "routes": [
            route(path="/vms", handler="handlers/vms.py"),
            route(method="POST", path="/vms", handler="handlers/create.py:create"),
        ]
    },
    "jobs": {"handlers": [job(name="sync", handler="jobs/sync.py", schedule="@hourly")]},
    "ui": {"pages": [page(path="/vmware", component="pages/dashboard.js")]},
}
FILES = ["handlers/vms.py", "handlers/create.py", "jobs/sync.py", "pages/dashboard.js"]


def test_a_complete_module_folder_is_valid(tmp_path: Path) -> None:
    folder = module_folder(tmp_path, FILES, capabilities=CAPABILITIES)

    result = validate_path(folder)

    assert result.public() == {"valid": True, "errors": [], "warnings": []}


@pytest.mark.parametrize(
    ("missing", "path", "code"),
    [
        ("handlers/vms.py", f"{ROUTES}/0/handler", "handler_not_found"),
        ("handlers/create.py", f"{ROUTES}/1/handler", "handler_not_found"),
        ("jobs/sync.py", f"{JOBS}/0/handler", "handler_not_found"),
        ("pages/dashboard.js", f"{PAGES}/0/component", "component_not_found"),
    ],
)
def test_a_missing_file_is_reported_at_the_field_naming_it(
    tmp_path: Path, missing: str, path: str, code: str
) -> None:
    folder = module_folder(
        tmp_path, [name for name in FILES if name != missing], capabilities=CAPABILITIES
    )

    issue = only_error(validate_path(folder), path, code)
    assert_mentions(issue, f"'{missing}'", "does not exist")


def test_a_handler_that_is_a_folder_is_not_found(tmp_path: Path) -> None:
    folder = module_folder(
        tmp_path, [], capabilities={"api": {"routes": [route(handler="handlers/vms.py")]}}
    )
    (folder / "handlers" / "vms.py").mkdir(parents=True)

    only_error(validate_path(folder), f"{ROUTES}/0/handler", "handler_not_found")


def test_a_handler_symlink_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("def handler(request):\n    return {}\n", "utf-8")
    folder = module_folder(
        tmp_path, [], capabilities={"api": {"routes": [route(handler="handlers/vms.py")]}}
    )
    (folder / "handlers").mkdir()
    (folder / "handlers" / "vms.py").symlink_to(outside)

    result = validate_path(folder)

    issue = only_error(result, f"{ROUTES}/0/handler", "file_outside_module")
    assert_mentions(issue, "'handlers/vms.py'", "outside the module folder")


def test_a_folder_symlink_leaving_the_module_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "vms.py").write_text("def handler(request):\n    return {}\n", "utf-8")
    folder = module_folder(
        tmp_path, [], capabilities={"api": {"routes": [route(handler="handlers/vms.py")]}}
    )
    (folder / "handlers").symlink_to(elsewhere, target_is_directory=True)

    only_error(validate_path(folder), f"{ROUTES}/0/handler", "file_outside_module")


def test_a_handler_symlink_inside_the_folder_is_accepted(tmp_path: Path) -> None:
    folder = module_folder(
        tmp_path,
        ["handlers/real.py"],
        capabilities={"api": {"routes": [route(handler="handlers/vms.py")]}},
    )
    (folder / "handlers" / "vms.py").symlink_to(folder / "handlers" / "real.py")

    assert validate_path(folder).valid


def test_validating_the_manifest_file_does_not_check_files(tmp_path: Path) -> None:
    folder = module_folder(tmp_path, [], capabilities=CAPABILITIES)

    result = validate_path(folder / "module.json")

    assert result.public() == {"valid": True, "errors": [], "warnings": []}
    assert not validate_path(folder).valid  # the same folder, checked as a folder


def test_the_python_api_checks_files_when_given_the_folder(tmp_path: Path) -> None:
    data = manifest(capabilities={"api": {"routes": [route(handler="handlers/vms.py:run")]}})

    assert validate_manifest(data).valid
    only_error(validate_manifest(data, folder=tmp_path), f"{ROUTES}/0/handler", "handler_not_found")
    (tmp_path / "handlers").mkdir()
    (tmp_path / "handlers" / "vms.py").write_text("def run(request):\n    return {}\n", "utf-8")
    assert validate_manifest(data, folder=tmp_path).valid


def test_file_errors_come_with_every_other_error(tmp_path: Path) -> None:
    folder = module_folder(
        tmp_path,
        [],
        version="1.0",
        capabilities={"api": {"routes": [route(handler="handlers/vms.py")]}},
    )

    result = validate_path(folder)

    assert found(result.errors) == [
        (f"{ROUTES}/0/handler", "handler_not_found"),
        ("/version", "invalid_version"),
    ]


def test_a_folder_without_module_json_is_invalid(tmp_path: Path) -> None:
    issue = only_error(validate_path(tmp_path), "", "file_not_found")
    assert issue.message


def test_a_missing_path_is_invalid(tmp_path: Path) -> None:
    only_error(validate_path(tmp_path / "nowhere" / "module.json"), "", "file_not_found")


@pytest.mark.parametrize(
    ("content", "where"),
    [
        (b'{\n  "name": "my-module",\n  "version": 1.0.0\n}\n', "line 3, column 17"),
        (b'{"name": "my-module",}', "line 1, column 22"),
        (b"", "line 1, column 1"),
    ],
)
def test_bad_json_is_reported_with_its_line_and_column(
    tmp_path: Path, content: bytes, where: str
) -> None:
    (tmp_path / "module.json").write_bytes(content)

    issue = only_error(validate_path(tmp_path), "", "invalid_json")
    assert_mentions(issue, where)


def test_a_manifest_that_is_not_utf8_is_invalid_json(tmp_path: Path) -> None:
    (tmp_path / "module.json").write_bytes(b'{"name": "caf\xe9"}')

    issue = only_error(validate_path(tmp_path / "module.json"), "", "invalid_json")
    assert_mentions(issue, "UTF-8")
