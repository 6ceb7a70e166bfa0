"""`modhub doctor`: it says which isolation and which process-tree limits workers get."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modhub.cli import app
from modhub.sandbox.cgroups import Cgroups


def doctor(tmp_path: Path) -> str:
    result = CliRunner().invoke(
        app, ["doctor", "--data-dir", str(tmp_path)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    # The table wraps long cells over several lines (a long data dir path makes it
    # narrower): read it as the words it shows, in order.
    return " ".join(re.sub(r"[\u2500-\u257f]", " ", result.output).split())


def test_doctor_names_the_control_groups_workers_get(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODHUB_CGROUPS", raising=False)
    groups = Cgroups.detect()
    if groups is not None:
        groups.close()

    output = doctor(tmp_path)

    assert "process-tree limits" in output
    if groups is None:
        assert "none: memory and process limits hold per process only" in output
    else:
        assert f"cgroup v{groups.version} memory and pids limits" in output
    assert "isolation" in output


def test_doctor_says_when_limits_hold_per_process_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODHUB_CGROUPS", "off")

    assert "none: memory and process limits hold per process only" in doctor(tmp_path)


def test_doctor_says_when_no_module_code_may_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODHUB_SANDBOX", "rlimits")  # as if bubblewrap were missing
    monkeypatch.setenv("MODHUB_MAX_MODULE_MEMORY_MB", "512")
    output = doctor(tmp_path)
    if os.getuid() == 0:
        assert "no module code is started" in output
    else:
        assert "rlimits and a scrubbed environment only" in output
    assert "wheels only" in output
    assert "memory 512 MB" in output


def test_doctor_names_node_and_esbuild(tmp_path: Path) -> None:
    output = doctor(tmp_path)

    assert re.search(r"node v\d+\.\d+", output)  # make test installs Node.js
    assert re.search(r"esbuild \d+\.\d+\.\d+ \(", output)


def test_doctor_says_how_to_install_a_missing_esbuild(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODHUB_NODE_TOOLS", str(tmp_path / "nowhere"))

    output = doctor(tmp_path)

    assert "esbuild none: esbuild is not installed in" in output
    assert "MODHUB_NODE_TOOLS" in output


def test_doctor_says_when_node_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no node on it

    output = doctor(tmp_path)

    assert "node none: Node.js (`node`) is not installed" in output
