"""Check a manifest's `dependencies.system` against what is really installed.

`python` is the interpreter modhub runs on (module environments are made from it),
`modhub` is modhub's own version, and any other tool (`node`) is asked with
`<tool> --version`, run without a shell and with a scrubbed environment.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from collections.abc import Mapping

import modhub
from modhub.lifecycle.environment import scrubbed_env
from modhub.semver import satisfies

NOT_FOUND = "not found"
"""What `found` says when a tool is not installed."""

UNKNOWN = "unknown"
"""What `found` says when a tool runs but prints no version."""

VERSION_TIMEOUT = 10.0
"""Seconds `<tool> --version` may take."""

_VERSION = re.compile(r"\d+\.\d+\.\d+")
_TOOL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def check_system(requirements: Mapping[str, str]) -> list[dict[str, str]]:
    """Return one problem per system requirement the machine does not meet."""
    problems: list[dict[str, str]] = []
    for tool, range_ in requirements.items():
        found = tool_version(tool)
        if found in (NOT_FOUND, UNKNOWN) or not satisfies(found, range_):
            problems.append(
                {
                    "path": f"/dependencies/system/{tool}",
                    "code": "system_requirement",
                    "message": f"{tool} {found} does not satisfy {range_}",
                    "tool": tool,
                    "found": found,
                    "range": range_,
                }
            )
    return problems


def tool_version(tool: str) -> str:
    """Return the version of `tool` as X.Y.Z, or "not found", or "unknown"."""
    if tool == "python":
        return _first_version(platform.python_version()) or UNKNOWN
    if tool == "modhub":
        return _first_version(modhub.__version__) or UNKNOWN
    # A bare command name looked up on PATH; never a path a manifest could point anywhere.
    if not _TOOL_NAME.fullmatch(tool):
        return NOT_FOUND
    executable = shutil.which(tool)
    if executable is None:
        return NOT_FOUND
    try:
        result = subprocess.run(
            [executable, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=scrubbed_env(),
            timeout=VERSION_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        return NOT_FOUND
    except (OSError, subprocess.TimeoutExpired):
        return UNKNOWN
    return _first_version(result.stdout) or _first_version(result.stderr) or UNKNOWN


def _first_version(text: str) -> str | None:
    match = _VERSION.search(text)
    return match.group(0) if match else None
