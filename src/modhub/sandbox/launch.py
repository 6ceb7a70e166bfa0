"""How a module worker is started: the command, its environment, and its isolation.

Where bubblewrap (`bwrap`) is installed, a worker gets its own mount, PID, IPC and
network namespaces: it sees the system read-only, its own code and environment
read-only, a private /tmp, and nothing of the data dir. Without bwrap the floor is
resource limits and a scrubbed environment, and only for an unprivileged modhub: as root
without bwrap no module code is started. Either way the interpreter is exec'd through
`prlimit` (its rlimits) and `setpriv` (the module's own uid when modhub is root, every
capability dropped, `no_new_privs`), so no module code ever runs as root, not even a
dependency's `.pth` file at interpreter start.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import modhub
from modhub.errors import WorkerUnavailable
from modhub.sandbox import worker as worker_module

WORKER_SCRIPT = "modhub_worker.py"
NODE_WORKER_SCRIPT = "modhub_worker.mjs"
NODE_HANDLERS = (".ts", ".mts", ".js", ".mjs")  # run by the Node worker (worker.mjs)
NODE_ADDRESS_SPACE_MB = 2048  # V8 reserves address space far beyond what it uses (see docs)
SAFE_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
FIRST_MODULE_UID = 200_000
MAX_TASKS = 64  # processes and threads of one worker (RLIMIT_NPROC, and cgroup pids.max)


@dataclass(frozen=True)
class ModuleRuntime:
    """Everything needed to start one module version's worker."""

    name: str
    version: str
    code: Path
    env: Path
    memory_mb: int = 256
    timeout_ms: int = 30_000
    max_concurrency: int = 8
    network: bool = False
    language: str = "python"  # "node" for the worker of its .ts/.js handlers

    @property
    def key(self) -> str:
        """Return the worker's identity: one worker per module version and language."""
        base = f"{self.name}@{self.version}"
        return base if self.language == "python" else f"{base}#{self.language}"

    def for_handler(self, handler: str) -> ModuleRuntime:
        """Return the runtime whose worker runs `handler` (Python or Node by its file)."""
        language = "node" if handler_language(handler) == "node" else "python"
        return self if language == self.language else replace(self, language=language)


def handler_language(handler: str) -> str:
    """Return "node" for a .ts/.mts/.js/.mjs handler, "python" for a .py one, else ""."""
    file = handler.rsplit(":", 1)[0] if ":" in handler else handler
    if file.endswith(NODE_HANDLERS):
        return "node"
    return "python" if file.endswith(".py") else ""


def node_binary() -> Path:
    """Return the `node` the Node workers run on, or refuse to start one."""
    found = shutil.which("node")
    if found is None:
        raise WorkerUnavailable("Node.js (`node`) is not installed: TypeScript handlers cannot run")
    return Path(found).resolve()


def isolation() -> str:
    """Return which isolation workers get here: `bubblewrap`, `rlimits`, or `refused`
    (root without bubblewrap: module code would run as root, so none is started)."""
    if bwrap_path():
        return "bubblewrap"
    return "refused" if os.getuid() == 0 else "rlimits"


def bwrap_path() -> str | None:
    """Return the bwrap binary if it is installed and usable."""
    if os.environ.get("MODHUB_SANDBOX") == "rlimits":
        return None
    return shutil.which("bwrap")


def module_uid(name: str) -> int:
    """Return a stable user id for a module (its own, so modules cannot touch each other)."""
    return FIRST_MODULE_UID + zlib.crc32(name.encode()) % 100_000


def worker_uid(name: str) -> int:
    """Return the uid a module's worker runs as (0: it keeps modhub's own)."""
    return module_uid(name) if bwrap_path() and os.getuid() == 0 else 0


def descendants(pid: int) -> list[int]:
    """Return every process below `pid` (a worker's sandbox: bwrap, its init, the worker)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def prepare_runtime(folder: Path) -> Path:
    """Write the worker script and the SDK into `folder` (read-only for workers)."""
    package = Path(modhub.__file__).resolve().parent
    target = folder / "modhub"
    if target.exists():
        shutil.rmtree(target)
    (target / "sdk").mkdir(parents=True)
    (target / "__init__.py").write_text(f'__version__ = "{modhub.__version__}"\n')
    for source in (package / "sdk").glob("*.py"):
        shutil.copy2(source, target / "sdk" / source.name)
    shutil.copy2(Path(worker_module.__file__), folder / WORKER_SCRIPT)
    shutil.copy2(Path(worker_module.__file__).with_suffix(".mjs"), folder / NODE_WORKER_SCRIPT)
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


class SandboxRefused(WorkerUnavailable):
    """Module code would run without the isolation this host requires."""


def limits_argv(
    *, memory_mb: int | None, cpu_seconds: int, nofile: int, nproc: int | None
) -> list[str]:
    """Return the `prlimit` prefix that sets a process's rlimits before it execs."""
    argv = [_tool("prlimit"), f"--cpu={cpu_seconds}", f"--nofile={nofile}", "--core=0"]
    if memory_mb is not None:
        argv.append(f"--as={memory_mb * 1024 * 1024}")
    if nproc is not None:  # only under a uid of the module's own: NPROC counts a whole uid
        argv.append(f"--nproc={nproc}")
    return [*argv, "--"]


def drop_argv(uid: int) -> list[str]:
    """Return the `setpriv` prefix that execs as `uid` with no capabilities, no_new_privs set.

    The interpreter is exec'd already unprivileged, so nothing a module ships (a `.pth`
    file, `sitecustomize`, a build backend) ever runs as root or with a capability.
    """
    argv = [_tool("setpriv")]
    if uid > 0:
        argv += [
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
        ]
    return [*argv, "--no-new-privs", "--"]


def refuse_root_without_bwrap(what: str) -> None:
    """Raise SandboxRefused when module code would run as root outside bubblewrap."""
    if os.getuid() == 0 and not bwrap_path():
        raise SandboxRefused(
            f"{what}: modhub runs as root and bubblewrap is not installed, so module code "
            "would run as root; install bubblewrap (apt-get install bubblewrap) or run "
            "modhub as an unprivileged user"
        )


def bwrap_argv(
    bwrap: str,
    *,
    network: bool,
    tmp_bytes: int | None,
    read_only: list[Path],
    writable: tuple[Path, ...] = (),
    chdir: Path,
    env: dict[str, str],
) -> list[str]:
    """Return bubblewrap's options: new namespaces, the system read-only, a private /tmp,
    `read_only` and `writable` bound at their own paths, and nothing else of the host."""
    argv = [
        bwrap,
        "--die-with-parent",  # the whole sandbox is killed when modhub dies, even by SIGKILL
        "--new-session",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ]
    if not network:
        argv.append("--unshare-net")
    argv += [
        "--ro-bind",
        "/usr",
        "/usr",
        "--ro-bind",
        "/etc",
        "/etc",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        # The module's uid must be able to write its private /tmp (its HOME and TMPDIR):
        # bwrap, run as real root, would make it a root-owned 0755 tmpfs. The tmpfs lives
        # in memory outside RLIMIT_AS, so it is capped at the module's memory limit.
        "--perms",
        "1777",
        *(["--size", str(tmp_bytes)] if tmp_bytes and _tmpfs_size_option(bwrap) else []),
        "--tmpfs",
        "/tmp",
    ]
    for link in ("bin", "lib", "lib64", "sbin"):
        target = Path("/") / link
        if target.is_symlink():
            argv += ["--symlink", os.readlink(target), str(target)]
        elif target.is_dir():
            argv += ["--ro-bind", str(target), str(target)]
    made: set[Path] = set()
    binds = [(path, "--ro-bind") for path in read_only] + [(p, "--bind") for p in writable]
    for path, option in binds:
        # bwrap makes missing parents 0700, which the module's uid could not cross.
        for parent in reversed(path.parents[:-1]):
            if parent not in made and not any(parent.is_relative_to(p) for p in ("/usr", "/etc")):
                argv += ["--perms", "0755", "--dir", str(parent)]
                made.add(parent)
        argv += [option, str(path), str(path)]
    argv += ["--chdir", str(chdir), "--clearenv"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    return [*argv, "--"]


def command(
    runtime: ModuleRuntime, runtime_dir: Path, tmp_dir: Path
) -> tuple[list[str], dict[str, str]]:
    """Return the argv and environment that start a worker for `runtime`."""
    refuse_root_without_bwrap(f"module '{runtime.name}' worker cannot start")
    bwrap = bwrap_path()
    uid = worker_uid(runtime.name)
    roots = interpreter_roots()
    if runtime.language == "node":
        node = node_binary()
        roots = [*roots, *([] if node.is_relative_to("/usr") else [node.parent.parent])]
        address_space = runtime.memory_mb + NODE_ADDRESS_SPACE_MB
        worker = [
            # The protocol moves to fds 3 and 4; fd 1 becomes the log (see worker.mjs).
            _tool("sh"),
            "-c",
            'exec 3<&0 4>&1 </dev/null >&2; exec "$0" "$@"',
            str(node),
            f"--max-old-space-size={runtime.memory_mb}",
            "--enable-source-maps",
            str(runtime_dir / NODE_WORKER_SCRIPT),
            "--code-dir",
            str(runtime.env / "node"),
        ]
    else:
        address_space = runtime.memory_mb
        worker = [
            str(runtime.env / "bin" / "python"),
            "-I",
            str(runtime_dir / WORKER_SCRIPT),
            "--module-dir",
            str(runtime.code),
            "--concurrency",
            str(runtime.max_concurrency),
        ]
    # Limits, then the uid and capabilities, are set before the interpreter starts.
    prefix = [
        *limits_argv(
            memory_mb=address_space,
            cpu_seconds=3600,
            nofile=256,
            nproc=MAX_TASKS if uid > 0 else None,
        ),
        *drop_argv(uid),
    ]
    env = {k: os.environ[k] for k in SAFE_ENV if k in os.environ}
    env.update(
        {
            "HOME": "/tmp",
            "TMPDIR": "/tmp",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "MALLOC_ARENA_MAX": "2",
        }
    )
    if runtime.language == "node":
        env.update({"UV_THREADPOOL_SIZE": "2", "NODE_ENV": "production"})
    if not bwrap:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        env.update({"HOME": str(tmp_dir), "TMPDIR": str(tmp_dir)})
        return [*prefix, *worker], env
    # No user namespace: bwrap stays real root until setpriv drops to the module's own
    # uid, so that RLIMIT_NPROC counts only that module's processes.
    argv = bwrap_argv(
        bwrap,
        network=runtime.network,
        tmp_bytes=runtime.memory_mb * 1024 * 1024,
        read_only=[*roots, runtime.env, runtime.code, runtime_dir],
        chdir=runtime.code,
        env=env,
    )
    return [*argv, *prefix, *worker], env


def _tool(name: str) -> str:
    """Return the path of a util-linux tool the sandbox needs, or refuse to start."""
    for folder in ("/usr/bin", "/bin", "/usr/sbin"):
        path = Path(folder) / name
        if path.exists():
            return str(path)
    raise SandboxRefused(f"`{name}` (util-linux) is not installed: module code cannot be started")


@functools.cache
def _tmpfs_size_option(bwrap: str) -> bool:
    """Return whether this bwrap knows `--size` (bubblewrap 0.8 and later)."""
    try:
        found = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--size" in found.stdout + found.stderr


def interpreter_roots() -> list[Path]:
    """Return the folders the environments' base interpreter lives in (outside /usr)."""
    roots = {Path(sys.base_prefix).resolve(), Path(sys.executable).resolve().parent.parent}
    return sorted(r for r in roots if not r.is_relative_to("/usr"))
