"""An invalid setting ends every command that reads the settings with one line naming it
(its variable, or its option when given on the command line) and exit 2, never a
traceback. Through the real command; nothing here reaches a database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import SECRET

CASES = [
    # (command, variables, what the one line names)
    (["serve"], {"MODHUB_NODE_HEARTBEAT_SECONDS": "0"}, "MODHUB_NODE_HEARTBEAT_SECONDS"),
    (["serve"], {"MODHUB_PORT": "abc"}, "MODHUB_PORT"),
    (["serve", "--port", "0"], {}, "--port"),
    (["serve"], {"MODHUB_PIP_FIND_LINKS": "not json"}, "MODHUB_PIP_FIND_LINKS"),
    (["db", "upgrade"], {"MODHUB_JOB_CONCURRENCY": "0"}, "MODHUB_JOB_CONCURRENCY"),
    (
        ["users", "create", "ann", "--role", "viewer", "--password-stdin"],
        {"MODHUB_PORT": "-1"},
        "MODHUB_PORT",
    ),
    (["tokens", "create", "--user", "ann"], {"MODHUB_SYNC_POLL_SECONDS": "x"}, "MODHUB_SYNC"),
    (["doctor"], {"MODHUB_LISTEN_CHANGES": "perhaps"}, "MODHUB_LISTEN_CHANGES"),
]


@pytest.mark.parametrize(("args", "variables", "named"), CASES)
def test_an_invalid_setting_ends_the_command_with_one_line_naming_it(
    tmp_path: Path, args: list[str], variables: dict[str, str], named: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODHUB_")}
    env.update(
        {
            "MODHUB_DATA_DIR": str(tmp_path / "data"),
            "MODHUB_SECRET_KEY": SECRET,
            "COLUMNS": "60",  # the line is not wrapped, even on a narrow terminal
            **variables,
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "modhub", *args],
        env=env,
        input="a password long enough\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {named}"), lines[0]
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "data").exists()  # it stopped before touching anything
