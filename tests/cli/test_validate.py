"""`modhub validate PATH [--json]` and `modhub schema`, run through Typer's test runner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from modhub.cli import app
from modhub.manifest import manifest_schema
from modhub.manifest.schema import render_schema

FIXTURES = Path(__file__).parents[1] / "manifest" / "fixtures"
ROUTES = "/capabilities/api/routes"
VALID = {"name": "my-module", "version": "1.0.0", "displayName": "My Module"}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def write(folder: Path, document: Any, name: str = "module.json") -> Path:
    """Write `document` as JSON into `folder/name`; return the file."""
    file = folder / name
    file.write_text(json.dumps(document), "utf-8")
    return file


def words(text: str) -> str:
    """Return `text` with runs of whitespace made single spaces (Rich wraps long lines)."""
    return " ".join(text.split())


def json_result(runner: CliRunner, path: Path) -> tuple[int, dict[str, Any]]:
    """Run `modhub validate PATH --json`; return the exit code and the parsed output."""
    outcome = runner.invoke(app, ["validate", str(path), "--json"])
    assert outcome.exception is None or isinstance(outcome.exception, SystemExit), outcome
    return outcome.exit_code, json.loads(outcome.stdout)


def assert_public_shape(result: dict[str, Any]) -> None:
    assert list(result) == ["valid", "errors", "warnings"]
    assert isinstance(result["valid"], bool)
    for issue in [*result["errors"], *result["warnings"]]:
        assert list(issue) == ["path", "code", "message"]
        assert all(isinstance(value, str) for value in issue.values())


# --- exit codes and the human report --------------------------------------------------


def test_a_valid_manifest_exits_0(runner: CliRunner, tmp_path: Path) -> None:
    outcome = runner.invoke(app, ["validate", str(write(tmp_path, VALID))])

    assert outcome.exit_code == 0, outcome.output
    assert "is a valid manifest" in words(outcome.stdout)


def test_an_invalid_manifest_exits_1_and_names_each_error_path(
    runner: CliRunner, tmp_path: Path
) -> None:
    document = {
        **VALID,
        "version": "1.0",
        "capabilities": {"api": {"routes": [{"method": "get", "path": "/a", "handler": "a.py"}]}},
    }

    outcome = runner.invoke(app, ["validate", str(write(tmp_path, document))])

    assert outcome.exit_code == 1, outcome.output
    report = words(outcome.stdout)
    assert f"{ROUTES}/0/method not_allowed" in report
    assert "/version invalid_version" in report
    assert "'1.0' is not a SemVer" in report
    assert "2 error(s)" in report


def test_warnings_do_not_make_a_manifest_invalid(runner: CliRunner) -> None:
    outcome = runner.invoke(app, ["validate", str(FIXTURES / "vmware-vcenter.json")])

    assert outcome.exit_code == 0, outcome.output
    report = words(outcome.stdout)
    assert "warning /dependencies/npm/vmware-rest-api npm_dependency" in report
    assert "with 1 warning(s)" in report


@pytest.mark.parametrize("fixture", ["vmware-vcenter.json", "seed-test1.json", "seed-test2.json"])
def test_the_seed_manifests_validate(runner: CliRunner, fixture: str) -> None:
    code, result = json_result(runner, FIXTURES / fixture)

    assert code == 0
    assert result["valid"] is True
    assert result["errors"] == []


def test_a_module_folder_is_validated_with_its_files(runner: CliRunner, tmp_path: Path) -> None:
    document = {
        **VALID,
        "capabilities": {
            "api": {
                "routes": [
                    {"method": "GET", "path": "/a", "handler": "handlers/a.py:run"},
                    {"method": "GET", "path": "/b", "handler": "handlers/b.py"},
                ]
            }
        },
    }
    write(tmp_path, document)
    (tmp_path / "handlers").mkdir()
    (tmp_path / "handlers" / "a.py").write_text("def run(request):\n    return {}\n", "utf-8")

    code, result = json_result(runner, tmp_path)

    assert code == 1
    assert [(e["path"], e["code"]) for e in result["errors"]] == [
        (f"{ROUTES}/1/handler", "handler_not_found")
    ]
    (tmp_path / "handlers" / "b.py").write_text("def handler(request):\n    return {}\n", "utf-8")
    assert json_result(runner, tmp_path) == (0, {"valid": True, "errors": [], "warnings": []})


# --- --json ---------------------------------------------------------------------------


def test_json_output_of_a_valid_manifest(runner: CliRunner) -> None:
    code, result = json_result(runner, FIXTURES / "seed-test1.json")

    assert code == 0
    assert_public_shape(result)
    assert result["valid"] is True
    assert result["errors"] == []
    assert result["warnings"] == []  # its .ts handler runs in the Node worker


def test_json_output_of_an_invalid_manifest(runner: CliRunner, tmp_path: Path) -> None:
    document = {**VALID, "name": "My_Module", "displayname": "typo"}

    code, result = json_result(runner, write(tmp_path, document))

    assert code == 1
    assert_public_shape(result)
    assert result["valid"] is False
    assert [(e["path"], e["code"]) for e in result["errors"]] == [
        ("/displayname", "unknown_field"),
        ("/name", "invalid_name"),
    ]
    assert "did you mean 'displayName'" in result["errors"][0]["message"]
    assert "'My_Module'" in result["errors"][1]["message"]


def test_json_output_is_only_json(runner: CliRunner, tmp_path: Path) -> None:
    outcome = runner.invoke(
        app, ["validate", str(write(tmp_path, {**VALID, "version": "x"})), "--json"]
    )

    assert outcome.exit_code == 1
    assert outcome.stdout.lstrip().startswith("{")
    assert json.loads(outcome.stdout)["valid"] is False  # nothing before or after the object


# --- files that cannot be read --------------------------------------------------------


def test_bad_json_is_reported_with_line_and_column(runner: CliRunner, tmp_path: Path) -> None:
    file = tmp_path / "module.json"
    file.write_text('{\n  "name": "my-module",\n  "version": 1.0.0\n}\n', "utf-8")

    code, result = json_result(runner, file)

    assert code == 1
    assert_public_shape(result)
    assert [(e["path"], e["code"]) for e in result["errors"]] == [("", "invalid_json")]
    assert "line 3, column 17" in result["errors"][0]["message"]


def test_bad_json_in_the_human_report(runner: CliRunner, tmp_path: Path) -> None:
    file = tmp_path / "module.json"
    file.write_text('{"name": "my-module",}', "utf-8")

    outcome = runner.invoke(app, ["validate", str(file)])

    assert outcome.exit_code == 1
    assert "invalid_json" in outcome.stdout
    assert "line 1, column 22" in words(outcome.stdout)


def test_a_missing_path_is_an_error(runner: CliRunner, tmp_path: Path) -> None:
    code, result = json_result(runner, tmp_path / "nowhere.json")

    assert code == 1
    assert result["valid"] is False
    assert [(e["path"], e["code"]) for e in result["errors"]] == [("", "file_not_found")]


def test_a_folder_without_a_manifest_is_an_error(runner: CliRunner, tmp_path: Path) -> None:
    outcome = runner.invoke(app, ["validate", str(tmp_path)])

    assert outcome.exit_code == 1
    assert "file_not_found" in outcome.stdout


def test_a_manifest_that_is_not_an_object_is_invalid(runner: CliRunner, tmp_path: Path) -> None:
    code, result = json_result(runner, write(tmp_path, ["not", "an", "object"]))

    assert code == 1
    assert [(e["path"], e["code"]) for e in result["errors"]] == [("", "wrong_type")]


def test_validate_needs_a_path(runner: CliRunner) -> None:
    outcome = runner.invoke(app, ["validate"])

    assert outcome.exit_code == 2  # Click's usage error


# --- modhub schema --------------------------------------------------------------------


def test_schema_prints_the_published_json_schema(runner: CliRunner) -> None:
    outcome = runner.invoke(app, ["schema"])

    assert outcome.exit_code == 0
    assert outcome.stdout == render_schema()
    assert json.loads(outcome.stdout) == manifest_schema()


def test_a_manifest_naming_the_printed_schema_validates(runner: CliRunner, tmp_path: Path) -> None:
    schema = json.loads(runner.invoke(app, ["schema"]).stdout)
    document = {"$schema": schema["$id"], **VALID}

    code, result = json_result(runner, write(tmp_path, document))

    assert code == 0
    assert result["valid"] is True


# --- the server's limits and settings --------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [("author", "a" * 201, "/author"), ("license", "l" * 101, "/license")],
)
def test_values_longer_than_the_server_stores_are_refused(
    runner: CliRunner, tmp_path: Path, field: str, value: str, path: str
) -> None:
    code, result = json_result(runner, write(tmp_path, {**VALID, field: value}))

    assert code == 1
    assert [(e["path"], e["code"]) for e in result["errors"]] == [(path, "too_long")]


def test_values_as_long_as_the_server_stores_are_valid(runner: CliRunner, tmp_path: Path) -> None:
    document = {**VALID, "author": "a" * 200, "license": "l" * 100}

    assert json_result(runner, write(tmp_path, document)) == (
        0,
        {"valid": True, "errors": [], "warnings": []},
    )


DIRECT = {**VALID, "dependencies": {"python": ["x @ https://example.org/x-1.0-py3-none-any.whl"]}}
LOCAL = {**VALID, "dependencies": {"python": ["x @ FILE:///tmp/x-1.0-py3-none-any.whl"]}}


def test_direct_references_are_refused_as_the_server_refuses_them(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODHUB_PIP_ALLOW_DIRECT_REFERENCES", raising=False)

    code, result = json_result(runner, write(tmp_path, DIRECT))

    assert code == 1
    assert [(e["path"], e["code"]) for e in result["errors"]] == [
        ("/dependencies/python/0", "direct_reference")
    ]


def test_direct_references_follow_the_servers_setting(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODHUB_PIP_ALLOW_DIRECT_REFERENCES", "true")

    assert json_result(runner, write(tmp_path, DIRECT))[0] == 0
    code, result = json_result(runner, write(tmp_path, LOCAL))  # local: never
    assert code == 1
    assert [e["code"] for e in result["errors"]] == ["local_requirement"]


def test_an_invalid_setting_is_named(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODHUB_PIP_ALLOW_DIRECT_REFERENCES", "perhaps")

    outcome = runner.invoke(app, ["validate", str(write(tmp_path, VALID))])

    assert outcome.exit_code == 2
    assert "MODHUB_PIP_ALLOW_DIRECT_REFERENCES" in words(outcome.stderr)
