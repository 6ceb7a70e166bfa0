"""Per-module virtual environments, made and filled by uv.

Each module version gets its own environment, so two modules that need conflicting
versions of one library both work. uv comes from the `uv` package on PyPI
(`uv.find_uv_bin()`); nothing is downloaded at run time. Keep `cache_dir` on the
same filesystem as the environments so that uv hard-links from its cache.

uv always runs without a shell, with `--no-config` (no `uv.toml` or `pyproject.toml`
picked up from the working directory or the user's home) and with a scrubbed
environment: only an allow-list of variables (PATH, HOME, locale, TLS and proxy
settings) reaches it, never a `MODHUB_*` secret.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import uv
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from modhub.errors import ModhubError
from modhub.manifest.formats import requirement_problem

LOG_TAIL_BYTES = 4096
"""The most of uv's output an InstallError carries in `extra["log"]`."""

_PASSED_VARIABLES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
        "SYSTEMROOT",  # Windows needs it to start any process.
    }
)
_FIXED_VARIABLES = {
    "NO_COLOR": "1",  # plain "error:"/"cause:" lines, no ANSI codes
    "UV_NO_PROGRESS": "1",
    "UV_PYTHON_DOWNLOADS": "never",  # use the interpreter we name, never fetch one
}


def scrubbed_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment for a child process: the allow-list of os.environ plus `extra`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if (name in _PASSED_VARIABLES or name.startswith("LC_")) and not name.startswith("MODHUB_")
    }
    env.update(_FIXED_VARIABLES)
    if extra:
        env.update(extra)
    return env


@dataclass(frozen=True)
class PackageIndex:
    """Where uv finds packages: an index, wheel folders, or (offline) wheel folders only."""

    index_url: str | None = None
    find_links: tuple[str, ...] = ()
    offline: bool = False

    def uv_options(self) -> list[str]:
        """Return the `uv pip install` options that select this index."""
        options: list[str] = []
        if self.offline:
            options += ["--offline", "--no-index"]
        elif self.index_url:
            options += ["--index-url", self.index_url]
        for link in self.find_links:
            options += ["--find-links", link]
        return options


class InstallError(ModhubError):
    """An environment could not be made or its requirements installed."""

    status: ClassVar[int] = 422
    title: ClassVar[str] = "Install failed"
    kind: ClassVar[str] = "install-failed"

    def __init__(self, detail: str, *, log: str = "", requirement: str | None = None) -> None:
        extra: dict[str, Any] = {"log": log}
        if requirement is not None:
            extra["requirement"] = requirement
        super().__init__(detail, **extra)
        self.log = log
        self.requirement = requirement


def uv_bin() -> str:
    """Return the path of the uv binary shipped by the `uv` package."""
    return str(uv.find_uv_bin())


def env_python(path: Path) -> Path:
    """Return the Python interpreter of the environment at `path`."""
    if os.name == "nt":  # pragma: no cover - modhub runs on POSIX
        return path / "Scripts" / "python.exe"
    return path / "bin" / "python"


def remove_env(path: Path) -> None:
    """Delete the environment at `path`; do nothing when it does not exist."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def create_env(
    path: Path,
    requirements: Sequence[str],
    *,
    index: PackageIndex,
    cache_dir: Path,
    python: str = sys.executable,
    log: Callable[[str], None] = lambda line: None,
    timeout: float = 600,
) -> None:
    """Make a virtual environment at `path` (absent or empty) and install `requirements`."""
    # uv's output goes to `log` line by line. On any failure (uv's, the timeout over both
    # steps, even KeyboardInterrupt) the half-made environment is removed; uv's failures
    # raise InstallError naming the requirement its error mentions.
    for requirement in requirements:
        problem = requirement_problem(requirement)
        if problem is not None:
            raise InstallError(
                f"'{requirement}' is not a valid requirement: {problem}", requirement=requirement
            )
    if path.is_symlink() or path.is_file() or (path.is_dir() and any(path.iterdir())):
        raise FileExistsError(f"{path} already exists; remove it first")

    cache_dir.mkdir(parents=True, exist_ok=True)
    env = scrubbed_env({"UV_CACHE_DIR": str(cache_dir)})
    runner = _Runner(log, timeout)
    try:
        runner.run(
            [uv_bin(), "venv", "--no-config", "--no-project", "--python", python, str(path)],
            env=env,
            what=f"could not create the environment at {path}",
        )
        if requirements:
            with tempfile.TemporaryDirectory(prefix="modhub-req-") as folder:
                requirements_file = Path(folder) / "requirements.txt"
                requirements_file.write_text("".join(f"{r}\n" for r in requirements), "utf-8")
                runner.run(
                    [
                        uv_bin(),
                        "pip",
                        "install",
                        "--no-config",
                        "--python",
                        str(env_python(path)),
                        *index.uv_options(),
                        "-r",
                        str(requirements_file),
                    ],
                    env=env,
                    what="could not install the requirements",
                    requirements=requirements,
                )
    except BaseException:
        remove_env(path)
        raise


def installed_packages(path: Path) -> dict[str, str]:
    """Return the packages installed in the environment at `path`: canonical name → version."""
    python = env_python(path)
    if not python.exists():
        raise FileNotFoundError(f"no environment at {path}")
    result = subprocess.run(
        [uv_bin(), "pip", "list", "--no-config", "--python", str(python), "--format", "json"],
        env=scrubbed_env(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise ModhubError(
            f"could not list the packages of {path}", log=_tail(result.stdout + result.stderr)
        )
    return {
        str(canonicalize_name(item["name"])): str(item["version"])
        for item in json.loads(result.stdout or "[]")
    }


class _Runner:
    """Run uv commands one after the other under one deadline, streaming their output."""

    def __init__(self, log: Callable[[str], None], timeout: float) -> None:
        self.log = log
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.lines: collections.deque[str] = collections.deque(maxlen=200)

    def run(
        self,
        command: list[str],
        *,
        env: dict[str, str],
        what: str,
        requirements: Sequence[str] = (),
    ) -> None:
        """Run `command`; raise InstallError when it fails or the deadline passes."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise self._timed_out()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,  # a timeout kills uv and any build backend it started
        )
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            _kill_group(process)

        timer = threading.Timer(remaining, expire)
        timer.daemon = True
        timer.start()
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.rstrip("\r\n")
                self.lines.append(line)
                self.log(line)
            returncode = process.wait()
        finally:
            timer.cancel()
            if process.poll() is None:
                _kill_group(process)
                process.wait()
        if expired.is_set():
            raise self._timed_out()
        if returncode != 0:
            output = "\n".join(self.lines)
            failed = _failed_requirement(output, requirements)
            detail = f"{what}: {_error_summary(output) or f'uv exited with code {returncode}'}"
            if failed is not None:
                detail = f"could not install '{failed}': {_error_summary(output)}"
            raise InstallError(detail, log=_tail(output), requirement=failed)

    def _timed_out(self) -> InstallError:
        return InstallError(
            f"the install did not finish within {self.timeout:g} s",
            log=_tail("\n".join(self.lines)),
        )


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _tail(text: str) -> str:
    data = text.encode("utf-8")
    if len(data) <= LOG_TAIL_BYTES:
        return text
    return data[-LOG_TAIL_BYTES:].decode("utf-8", errors="ignore")


def _error_summary(output: str) -> str:
    """Return uv's error and its causes on one line, without its hints."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("error:")), None)
    if start is None:
        return ""
    parts = [lines[start].removeprefix("error:").strip()]
    for line in lines[start + 1 :]:
        stripped = line.strip()
        if stripped.startswith("cause:"):
            parts.append(stripped.removeprefix("cause:").strip())
        elif stripped.startswith(("hint:", "error:")):
            break
        elif stripped and line.startswith(" ") and len(parts) > 1:
            parts[-1] += " " + stripped
    return ": ".join(parts)


def _failed_requirement(output: str, requirements: Sequence[str]) -> str | None:
    """Return the requirement whose name uv's error mentions first, if any."""
    error_at = output.find("error:")
    text = output[error_at:] if error_at >= 0 else output
    best: tuple[int, str] | None = None
    for requirement in requirements:
        name = canonicalize_name(Requirement(requirement).name)
        # uv prints normalized names; match `-`, `_` and `.` alike, as a whole word.
        words = r"[-_.]+".join(map(re.escape, name.split("-")))
        pattern = rf"(?<![\w.-]){words}(?![\w-]|\.\w)"
        match = re.search(pattern, text, re.IGNORECASE)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), requirement)
    return best[1] if best else None
