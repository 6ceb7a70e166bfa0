"""`runtime.storageMb`: the manifest's store limit, in the model, the shipped schema and
`modhub validate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from modhub.cli import app
from modhub.manifest import Manifest, manifest_schema, validate_manifest

BASE = {"name": "keeper", "version": "1.0.0", "displayName": "Keeper"}


def with_storage(value: Any) -> dict[str, Any]:
    return {**BASE, "runtime": {"storageMb": value}}


@pytest.mark.parametrize("value", [1, 64, 65_536])
def test_a_storage_limit_in_bounds_is_valid(value: int) -> None:
    result = validate_manifest(with_storage(value))
    assert result.valid, result.errors
    assert Manifest.model_validate(with_storage(value)).runtime.storage_mb == value


def test_without_a_storage_limit_the_manifest_says_none() -> None:
    assert Manifest.model_validate(BASE).runtime.storage_mb is None  # the store's 64 MB


@pytest.mark.parametrize("value", [0, -1, 65_537, "64", 1.5, True, [64]])
def test_a_bad_storage_limit_is_refused_at_its_path(value: Any) -> None:
    result = validate_manifest(with_storage(value))
    assert not result.valid
    assert [e.path for e in result.errors] == ["/runtime/storageMb"]


def test_the_shipped_schema_bounds_storage_mb() -> None:
    runtime = manifest_schema()["$defs"]["Runtime"]["properties"]
    [integer] = [s for s in runtime["storageMb"]["anyOf"] if s.get("type") == "integer"]
    assert (integer["minimum"], integer["maximum"]) == (1, 65_536)


def test_modhub_validate_names_a_bad_storage_limit(tmp_path: Path) -> None:
    path = tmp_path / "module.json"
    path.write_text(json.dumps(with_storage(0)), "utf-8")

    outcome = CliRunner().invoke(app, ["validate", str(path), "--json"])

    assert outcome.exit_code == 1, outcome.output
    errors = json.loads(outcome.stdout)["errors"]
    assert [e["path"] for e in errors] == ["/runtime/storageMb"]
