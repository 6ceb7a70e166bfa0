"""The operator's guide (docs/operations.md) and what it ships (deploy/): every setting
documented, the systemd unit valid and starting a real command, the links alive."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command

from modhub.cli import app
from modhub.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "operations.md"
UNIT = ROOT / "deploy" / "modhub.service"
CLIENT_VARIABLES = {"MODHUB_URL", "MODHUB_TOKEN"}  # the CLI's API commands, not the server's


def settings_table() -> set[str]:
    """Return the MODHUB_* names in the rows of the guide's settings table."""
    section = GUIDE.read_text().split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `MODHUB_")]
    return {
        name for row in rows for name in re.findall(r"`(MODHUB_[A-Z0-9_]+)`", row.split("|")[1])
    }


def test_every_setting_is_in_the_guide_and_every_row_is_a_setting() -> None:
    settings = {f"MODHUB_{name.upper()}" for name in Settings.model_fields}
    documented = settings_table()
    assert settings - documented == set(), "settings missing from docs/operations.md"
    assert documented - settings - CLIENT_VARIABLES == set(), "rows that are no setting"


def test_the_guide_links_to_files_that_exist() -> None:
    text = GUIDE.read_text()
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (GUIDE.parent / target).exists(), target
    for page, anchor in re.findall(r"\]\(([a-z-]+\.md)#([^)]+)\)", text):
        headings = (ROOT / "docs" / page).read_text().splitlines()
        slugs = {
            re.sub(r"[^a-z0-9 -]", "", h.lstrip("#").strip().lower()).replace(" ", "-")
            for h in headings
            if h.startswith("#")
        }
        assert anchor in slugs, anchor


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    parser.read_string(UNIT.read_text())
    return parser


def test_the_unit_runs_modhub_serve_as_its_own_user_in_a_private_data_dir() -> None:
    parsed = unit()
    assert parsed.sections() == ["Unit", "Service", "Install"]
    service = parsed["Service"]
    argv = service["ExecStart"].split()
    assert Path(argv[0]).name == "modhub"
    command = get_command(app)
    assert argv[1] in command.commands  # type: ignore[attr-defined]
    assert argv[1:] == ["serve"]
    assert service["User"] == "modhub"
    assert service["StateDirectory"] == "modhub"
    assert service["StateDirectoryMode"] == "0700"
    assert service["Environment"] == "MODHUB_DATA_DIR=/var/lib/modhub"
    assert service["KillSignal"] == "SIGTERM"
    grace = Settings.model_fields["shutdown_grace_seconds"].default
    assert int(service["TimeoutStopSec"]) > grace  # the grace period fits in the stop time
    assert parsed["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the unit's parse test still runs)")
    modhub = Path(sys.executable).with_name("modhub")
    assert modhub.is_file()
    copy = tmp_path / "modhub.service"  # ExecStart must name a file that exists here
    copy.write_text(UNIT.read_text().replace("/opt/modhub/bin/modhub", str(modhub)))
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # no unknown key, no warning
