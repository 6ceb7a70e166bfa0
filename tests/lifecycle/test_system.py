"""System requirements (`dependencies.system`) checked against the real machine."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

import modhub
from modhub.lifecycle import system
from modhub.lifecycle.environment import scrubbed_env
from modhub.lifecycle.system import check_system, tool_version

PYTHON = platform.python_version()
MAJOR = int(PYTHON.split(".")[0])


def test_python_satisfied() -> None:
    assert check_system({"python": f">={MAJOR}.0.0"}) == []
    assert check_system({"python": f"^{PYTHON}"}) == []


def test_python_unsatisfied_names_tool_version_and_range() -> None:
    range_ = f">={MAJOR + 1}.0.0"
    assert check_system({"python": range_}) == [
        {
            "path": "/dependencies/system/python",
            "code": "system_requirement",
            "message": f"python {PYTHON} does not satisfy {range_}",
            "tool": "python",
            "found": PYTHON,
            "range": range_,
        }
    ]


def test_modhub_checked_against_its_own_version() -> None:
    assert check_system({"modhub": f"^{modhub.__version__}"}) == []
    [problem] = check_system({"modhub": ">=99.0.0"})
    assert problem["found"] == modhub.__version__
    assert problem["message"] == f"modhub {modhub.__version__} does not satisfy >=99.0.0"


def test_node_runs_for_its_version() -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    out = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    expected = out.stdout.strip().removeprefix("v")
    assert tool_version("node") == expected
    assert check_system({"node": ">=1.0.0"}) == []
    [problem] = check_system({"node": "<1.0.0"})
    assert (problem["tool"], problem["found"], problem["range"]) == ("node", expected, "<1.0.0")


def test_missing_tool_is_not_found() -> None:
    assert check_system({"mh-no-such-tool": ">=1.0.0"}) == [
        {
            "path": "/dependencies/system/mh-no-such-tool",
            "code": "system_requirement",
            "message": "mh-no-such-tool not found does not satisfy >=1.0.0",
            "tool": "mh-no-such-tool",
            "found": "not found",
            "range": ">=1.0.0",
        }
    ]


def test_one_problem_per_unmet_requirement_in_order() -> None:
    problems = check_system(
        {"python": ">=0.0.1", "mh-missing-a": "*", "modhub": ">=99.0.0", "mh-missing-b": "1.x"}
    )
    assert [p["tool"] for p in problems] == ["mh-missing-a", "modhub", "mh-missing-b"]


def fake_tool(folder: Path, name: str, script: str) -> None:
    """Write an executable `name` into `folder` running the shell `script`."""
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


def test_version_is_first_x_y_z_in_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tool(tmp_path, "mh-tool", 'echo "mh-tool version v3.14.15-beta (build 2.7.18)"')
    fake_tool(tmp_path, "mh-stderr", 'echo "mh-stderr 1.2.3" >&2')
    fake_tool(tmp_path, "mh-silent", "exit 0")
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert tool_version("mh-tool") == "3.14.15"
    assert tool_version("mh-stderr") == "1.2.3"
    assert tool_version("mh-silent") == "unknown"
    assert check_system({"mh-tool": "^3.0.0", "mh-stderr": "~1.2.0"}) == []
    [problem] = check_system({"mh-silent": "*"})
    assert problem["message"] == "mh-silent unknown does not satisfy *"


def test_tool_gets_a_scrubbed_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tool(tmp_path, "mh-env", 'echo "1.0.0 ${MODHUB_SECRET_KEY:-clean}"')
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setenv("MODHUB_SECRET_KEY", "9.9.9")
    assert tool_version("mh-env") == "1.0.0"
    out = subprocess.run(
        [str(tmp_path / "mh-env")],
        capture_output=True,
        text=True,
        check=True,
        env=scrubbed_env(),
    )
    assert out.stdout.strip() == "1.0.0 clean"


def test_slow_tool_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tool(tmp_path, "mh-slow", "exec sleep 30")
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setattr(system, "VERSION_TIMEOUT", 0.2)
    assert tool_version("mh-slow") == "unknown"


@pytest.mark.parametrize("tool", ["/bin/sh", "../node", "", "-v", "node --eval"])
def test_paths_and_odd_names_are_not_run(tool: str) -> None:
    assert tool_version(tool) == "not found"
