"""`modhub module new` and `modhub sdk types` (a new module answering through a real server
is in tests/typescript/test_example.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modhub.cli import app


def test_sdk_types_prints_the_shipped_definitions() -> None:
    outcome = CliRunner().invoke(app, ["sdk", "types"])
    assert outcome.exit_code == 0
    shipped = Path(__file__).parents[2] / "src" / "modhub" / "sdk" / "modhub.d.ts"
    assert outcome.stdout == shipped.read_text()
    for name in ("interface Request", "interface JobContext", "interface Store", "RouteHandler"):
        assert name in outcome.stdout


def test_the_typescript_example_carries_the_current_definitions() -> None:
    # The example keeps a copy for editors (what `modhub sdk types > modhub.d.ts` writes):
    # it must not drift from the contract the Node worker implements.
    root = Path(__file__).parents[2]
    example = root / "examples" / "modules" / "vmware-vcenter-ts" / "modhub.d.ts"
    shipped = root / "src" / "modhub" / "sdk" / "modhub.d.ts"
    assert example.read_text() == shipped.read_text()


@pytest.mark.parametrize("lang", ["python", "typescript"])
def test_module_new_writes_a_valid_module_with_a_passing_test(tmp_path: Path, lang: str) -> None:
    folder = tmp_path / "inventory-tool"
    outcome = CliRunner().invoke(
        app, ["module", "new", "inventory-tool", "--lang", lang, "--dir", str(folder)]
    )
    assert outcome.exit_code == 0, outcome.output
    manifest = json.loads((folder / "module.json").read_text())
    assert manifest["$schema"] == "./module.schema.json"
    assert (folder / "module.schema.json").is_file()
    caps = manifest["capabilities"]
    assert len(caps["api"]["routes"]) == len(caps["jobs"]["handlers"]) == 1
    assert len(caps["ui"]["pages"]) == 1
    assert CliRunner().invoke(app, ["validate", str(folder)]).exit_code == 0
    if lang == "python":
        test = [str(Path(".venv/bin/pytest").resolve()), "-q", "-p", "no:randomly", "tests"]
    else:
        test = ["node", "--test", "tests/"]
    ran = subprocess.run(test, cwd=folder, capture_output=True, text=True, check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_module_new_refuses_a_bad_name_a_bad_language_and_a_full_folder(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["module", "new", "Bad_Name", "--dir", str(tmp_path / "x")])
    assert bad.exit_code == 2
    assert "NAME" in bad.output
    lang = runner.invoke(app, ["module", "new", "ok", "--lang", "ruby", "--dir", str(tmp_path)])
    assert lang.exit_code == 2
    assert "--lang" in lang.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    full = runner.invoke(app, ["module", "new", "ok", "--dir", str(tmp_path / "full")])
    assert full.exit_code == 2
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "full" / "module.json").exists()
