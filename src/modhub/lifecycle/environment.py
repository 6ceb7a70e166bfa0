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
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
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
from modhub.sandbox import launch
from modhub.sandbox.output import read_lines_sync

LOG_TAIL_BYTES = 4096
"""The most of uv's output an InstallError carries in `extra["log"]`."""
MAX_LINE_BYTES = 4096
"""Longer lines of an install's output are cut (a build step's output is the module's)."""

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


READY_MARK = ".modhub-ready"
"""Written into an environment once it is complete: one without it is a leftover."""

INSTALL_TASKS = 512  # processes and threads of one install (uv is multi-threaded)
INSTALL_MEMORY_MB = 4096  # address space of each process of an install (uv and a build step)


def env_ready(path: Path) -> bool:
    """Return whether the environment at `path` was completely built."""
    return (path / READY_MARK).is_file()


def create_env(
    path: Path,
    requirements: Sequence[str],
    *,
    index: PackageIndex,
    cache_dir: Path,
    python: str = sys.executable,
    owner: str | None = None,
    source_builds: bool = False,
    direct_references: bool = False,
    log: Callable[[str], None] = lambda line: None,
    timeout: float = 600,
    finish: Callable[[Path], None] | None = None,
) -> None:
    """Make a virtual environment at `path` (absent or empty) and install `requirements`;
    then `finish(path)` (the module's TypeScript build) before it is marked complete.

    uv runs in the module's sandbox (`owner`'s uid when modhub is root, bubblewrap where
    installed): it may write only `path` and `cache_dir`, sees nothing of the data dir,
    has the network only when the index needs it, and dies with modhub. Only wheels are
    installed unless `source_builds` (then a package's build step runs in that sandbox);
    URL and VCS requirements only with `direct_references`, local ones never.
    """
    # uv's output goes to `log` line by line. On any failure (uv's, the timeout over both
    # steps, even KeyboardInterrupt) the half-made environment is removed; uv's failures
    # raise InstallError naming the requirement its error mentions.
    for requirement in requirements:
        problem = requirement_problem(requirement, allow_direct_references=direct_references)
        if problem is not None:
            raise InstallError(
                f"'{requirement}' is not a valid requirement: {problem}", requirement=requirement
            )
    if path.is_symlink() or path.is_file() or (path.is_dir() and any(path.iterdir())):
        raise FileExistsError(f"{path} already exists; remove it first")
    if requirements:
        launch.refuse_root_without_bwrap(f"cannot install the requirements of {path.name}")

    # The real interpreter, not a venv's link to it: the sandbox shows the interpreter's
    # own folders only, and the environment must not depend on modhub's venv.
    python = str(Path(python).resolve())
    uid = launch.module_uid(owner) if owner and os.getuid() == 0 else 0
    for folder in (path, cache_dir):
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, uid, uid)
    cache_dir.chmod(0o700)  # no other module's install or worker reads or writes it
    # The cache and the environment are two mounts in the sandbox: uv copies, as hard
    # links cannot cross them.
    env = scrubbed_env(
        {"UV_CACHE_DIR": str(cache_dir), "UV_LINK_MODE": "copy", "HOME": "/tmp", "TMPDIR": "/tmp"}
    )
    box = _InstallBox(uid, index, writable=(path, cache_dir), python=python, env=env)
    runner = _Runner(log, timeout)
    try:
        runner.run(
            box.wrap(
                [uv_bin(), "venv", "--no-config", "--no-project", "--python", python, str(path)],
                timeout,
            ),
            env=env,
            what=f"could not create the environment at {path}",
        )
        if requirements:
            # The requirements file goes in the module's own cache, the one place besides
            # the environment that the sandbox can see and uv may write.
            requirements_file = (
                cache_dir / f"requirements-{os.getpid()}-{threading.get_ident()}.txt"
            )
            requirements_file.write_text("".join(f"{r}\n" for r in requirements), "utf-8")
            try:
                runner.run(
                    box.wrap(
                        [
                            uv_bin(),
                            "pip",
                            "install",
                            "--no-config",
                            "--python",
                            str(env_python(path)),
                            *index.uv_options(),
                            *([] if source_builds else ["--no-build"]),
                            "-r",
                            str(requirements_file),
                        ],
                        timeout,
                    ),
                    env=env,
                    what="could not install the requirements",
                    requirements=requirements,
                )
            finally:
                requirements_file.unlink(missing_ok=True)
        if finish is not None:
            finish(path)
        _seal(path)
    except BaseException:
        remove_env(path)
        raise


@dataclass(frozen=True)
class _InstallBox:
    """The sandbox uv runs in during an install."""

    uid: int
    index: PackageIndex
    writable: tuple[Path, ...]
    python: str
    env: dict[str, str]

    def wrap(self, command: list[str], timeout: float) -> list[str]:
        """Return `command` run as the module's uid, in bubblewrap where installed."""
        prefix = [
            *launch.limits_argv(
                memory_mb=INSTALL_MEMORY_MB,
                cpu_seconds=max(1, int(timeout)),
                nofile=4096,
                nproc=INSTALL_TASKS if self.uid > 0 else None,
            ),
            *launch.drop_argv(self.uid),
        ]
        bwrap = launch.bwrap_path()
        if bwrap is None:
            return [*prefix, *command]
        uv_folder = Path(command[0]).resolve().parent
        read_only = {
            *launch.interpreter_roots(),
            uv_folder,
            Path(self.python).parent,
            *(Path(link) for link in self.index.find_links if Path(link).is_dir()),
        }
        box = launch.bwrap_argv(
            bwrap,
            network=not self.index.offline,  # an index is only reached over the network
            tmp_bytes=None,
            read_only=sorted(p for p in read_only if not _inside(p, self.writable)),
            writable=self.writable,
            chdir=self.writable[0],
            env=self.env,
        )
        return [*box, *prefix, *command]


def _inside(path: Path, folders: tuple[Path, ...]) -> bool:
    return any(path.is_relative_to(folder) for folder in folders)


def _seal(path: Path) -> None:
    """Give a finished environment back to modhub's uid, read-only for everyone else,
    and mark it complete."""
    me = os.getuid()
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), me, me)
    os.chown(path, me, me)
    (path / READY_MARK).write_text("")


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
            assert isinstance(process.stdout, io.BufferedIOBase)
            # A build step prints what its author likes: lines are cut as they are read.
            for line in read_lines_sync(process.stdout, MAX_LINE_BYTES):
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


def _kill_group(process: subprocess.Popen[bytes]) -> None:
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
