"""A module's TypeScript and JavaScript, compiled at install time with esbuild.

Handlers ending in .ts, .mts, .js or .mjs are bundled by esbuild (its own modules joined,
npm packages left as imports) into `<env>/node/<file>.mjs`, where the Node worker
(`sandbox/worker.mjs`) imports them. A syntax error fails the install and names
`file:line:column`; types are not checked (that is the author's editor's and `tsc`'s job).

esbuild comes from the npm registry, pinned in `tools/node/package-lock.json`, installed
by `make install` (`npm ci` there); `MODHUB_NODE_TOOLS` names another such folder.
Nothing is downloaded at run time. esbuild only parses the module's files: no plugin and
nothing of the module runs while it compiles.

A module folder with a `package.json` and a `package-lock.json` gets its production
dependencies with `npm ci --omit=dev --ignore-scripts` into `<env>/node/node_modules`, run
in the install sandbox as the module's uid (as uv is): `MODHUB_NPM_REGISTRY` names the
registry, `MODHUB_NPM_OFFLINE=1` installs from the cache only, without the network; the
cache is `<data dir>/cache/npm/<module>`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import modhub
from modhub.lifecycle import environment
from modhub.lifecycle.environment import InstallError, PackageIndex, scrubbed_env
from modhub.manifest import Manifest
from modhub.manifest.formats import split_handler
from modhub.manifest.result import Issue
from modhub.sandbox import launch

BUILD_SCRIPT = Path(__file__).with_name("typescript_build.mjs")
OUTPUT = "node"  # the folder of the environment the Node worker imports from
PAGES = "ui"  # the folder of the environment with the compiled page components
PAGE_SOURCES = (".tsx", ".jsx", ".ts", ".mts")
COMPILE_TIMEOUT = 120.0
NPM_MEMORY_MB = 4096


class CompileError(InstallError):
    """esbuild refused a file: the detail names `file:line:column` and esbuild's message."""

    def __init__(self, detail: str, *, file: str = "", line: int = 0, column: int = 0) -> None:
        super().__init__(detail)
        self.extra.update({"file": file, "line": line, "column": column})
        self.file, self.line, self.column = file, line, column


def tools_dir() -> Path:
    """Return the folder esbuild is installed in (`npm ci` in tools/node by make install)."""
    configured = os.environ.get("MODHUB_NODE_TOOLS")
    if configured:
        return Path(configured)
    return Path(modhub.__file__).resolve().parents[2] / "tools" / "node"


def esbuild_package() -> Path:
    """Return esbuild's package folder, or raise InstallError saying how to install it."""
    package = tools_dir() / "node_modules" / "esbuild"
    if not (package / "package.json").is_file():
        raise InstallError(
            f"esbuild is not installed in {tools_dir()}: run `make install` (npm ci in "
            "tools/node) or set MODHUB_NODE_TOOLS to a folder where it is"
        )
    return package


def handler_refs(manifest: Manifest) -> list[str]:
    """Return every handler ref of the manifest (routes, jobs, event subscriptions)."""
    capabilities = manifest.capabilities
    events = getattr(capabilities, "events", None)  # event subscriptions, where the model has them
    return [
        *(route.handler for route in capabilities.api.routes),
        *(job.handler for job in capabilities.jobs.handlers),
        *(s.handler for s in (getattr(events, "subscribes", None) or ())),
    ]


def node_handlers(manifest: Manifest) -> list[str]:
    """Return the module's handler files that the Node worker runs, each once, sorted."""
    refs = handler_refs(manifest)
    return sorted({split_handler(r)[0] for r in refs if launch.handler_language(r) == "node"})


def compiled_pages(manifest: Manifest) -> list[str]:
    """Return the page components compiled for the console (.tsx, .jsx, .ts, .mts)."""
    pages = manifest.capabilities.ui.pages
    return sorted({p.component for p in pages if p.component.endswith(PAGE_SOURCES)})


def page_output(env: Path, component: str) -> Path | None:
    """Return the compiled file the console loads for a page `component` (None: the
    component is served as it is, from the module's code)."""
    if not component.endswith(PAGE_SOURCES):
        return None
    return env / PAGES / (component.rsplit(".", 1)[0] + ".js")


def compile_files(
    root: Path,
    outdir: Path | None,
    entries: Sequence[str],
    *,
    platform: str = "node",
    node_paths: Sequence[Path] = (),
) -> dict[str, list[str]]:
    """Compile `entries` (paths inside `root`) into `outdir` (None: check only, write
    nothing) and return each entry's exports; raise CompileError at the first error."""
    if not entries:
        return {}
    node = shutil.which("node")
    if node is None:
        raise InstallError("Node.js (`node`) is not installed: TypeScript cannot be compiled")
    job = {
        "root": str(root.resolve()),
        "outdir": str(outdir if outdir is not None else root.resolve() / ".modhub-check"),
        "entries": list(entries),
        "platform": platform,
        "write": outdir is not None,
        "nodePaths": [str(p) for p in node_paths],
    }
    try:
        done = subprocess.run(
            [node, str(BUILD_SCRIPT), str(esbuild_package()), json.dumps(job)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=scrubbed_env(),
            timeout=COMPILE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InstallError(f"esbuild did not finish within {COMPILE_TIMEOUT:g} s") from None
    try:
        answer: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        raise InstallError(
            f"esbuild failed (exit code {done.returncode})", log=done.stderr[-4096:]
        ) from None
    errors = answer.get("errors") or []
    if errors:
        first = errors[0]
        where = f"{first['file']}:{first['line']}:{first['column']}" if first["file"] else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        if first["file"].startswith("modhub-page:"):  # the wrapper of a React page
            first["file"] = os.path.relpath(first["file"].removeprefix("modhub-page:"), root)
            where = first["file"]
        if 'resolve "react' in first["text"]:
            more += ": a page that default-exports a React component needs react and react-dom "
            more += "in the module's package.json (with its package-lock.json)"
        raise CompileError(
            f"{where}: {first['text']}{more}" if where else f"{first['text']}{more}",
            file=first["file"],
            line=first["line"],
            column=first["column"],
        )
    return {str(k): list(v) for k, v in (answer.get("exports") or {}).items()}


def missing_exports(refs: Iterable[str], exports: dict[str, list[str]]) -> list[str]:
    """Return a message for each handler ref whose function the compiled file does not export."""
    problems = []
    for ref in refs:
        file, function = split_handler(ref)
        names = exports.get(file)
        if names is None:
            continue
        if function not in names and not (function == "handler" and "default" in names):
            wanted = f"'{function}'" + (" or a default export" if function == "handler" else "")
            problems.append(f"'{file}' does not export {wanted}")
    return problems


def build(
    manifest: Manifest,
    code: Path,
    env: Path,
    *,
    owner_uid: int,
    cache_dir: Path,
    log: Callable[[str], None],
) -> None:
    """Install the module's npm dependencies and compile its Node handlers into `env`."""
    entries = node_handlers(manifest)
    pages = compiled_pages(manifest)
    if not entries and not pages:
        return
    out = env / OUTPUT
    out.mkdir(parents=True, exist_ok=True)
    if (code / "package.json").is_file():
        install_packages(code, out, owner_uid=owner_uid, cache_dir=cache_dir, log=log)
    if pages:
        compile_files(
            code, env / PAGES, pages, platform="browser", node_paths=[out / "node_modules"]
        )
        log(f"compiled {len(pages)} page component(s) for the console with esbuild")
    if not entries:
        return
    exports = compile_files(code, out, entries)
    refs = [r for r in handler_refs(manifest) if launch.handler_language(r) == "node"]
    problems = missing_exports(refs, exports)
    if problems:
        raise InstallError("; ".join(problems))
    log(f"compiled {len(entries)} TypeScript/JavaScript handler file(s) with esbuild")


def install_packages(
    code: Path, out: Path, *, owner_uid: int, cache_dir: Path, log: Callable[[str], None]
) -> None:
    """Run `npm ci --omit=dev --ignore-scripts` for the module's package.json into `out`,
    in the install sandbox (the module's uid; only `out` and its cache writable)."""
    lock = code / "package-lock.json"
    if not lock.is_file():
        raise InstallError(
            "package.json needs its package-lock.json beside it (npm ci installs exactly "
            "what the lockfile says): run `npm install` in the module folder and ship both"
        )
    npm = shutil.which("npm")
    if npm is None:
        raise InstallError("npm is not installed: the module's package.json cannot be installed")
    launch.refuse_root_without_bwrap(f"cannot install the npm packages of {code.name}")
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(code / name, out / name)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for folder in (out, cache_dir):
        os.chown(folder, owner_uid, owner_uid)
        for root, dirs, files in os.walk(folder):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(root, name), owner_uid, owner_uid)
    cache_dir.chmod(0o700)
    offline = os.environ.get("MODHUB_NPM_OFFLINE", "") in ("1", "true", "yes")
    registry = os.environ.get("MODHUB_NPM_REGISTRY")
    env = scrubbed_env(
        {
            "HOME": "/tmp",
            "TMPDIR": "/tmp",
            "npm_config_cache": str(cache_dir),
            "npm_config_update_notifier": "false",
            "npm_config_fund": "false",
            "npm_config_audit": "false",
            **({"npm_config_registry": registry} if registry else {}),
        }
    )
    argv = [
        str(Path(npm).resolve()),
        "ci",
        "--omit=dev",
        "--ignore-scripts",
        "--no-audit",
        "--no-fund",
        *(["--offline"] if offline else ["--prefer-offline"]),
    ]
    node = Path(shutil.which("node") or npm).resolve()
    box = environment._InstallBox(  # the sandbox uv installs in, for npm
        owner_uid,
        PackageIndex(offline=offline),
        writable=(out, cache_dir),
        python=str(node),
        env=env,
    )
    runner = environment._Runner(log, COMPILE_TIMEOUT * 5)
    try:
        runner.run(box.wrap(argv, COMPILE_TIMEOUT * 5), env=env, what="npm ci failed")
    except InstallError as exc:
        errors = [line for line in runner.lines if line.startswith("npm error")]
        summary = " ".join(line.removeprefix("npm error").strip() for line in errors[:3])
        raise InstallError(f"npm ci failed: {summary or exc.detail}", log=exc.log) from None


def check_handlers(manifest: Manifest, folder: Path) -> list[Issue]:
    """Return an error for each Node handler of `folder` that does not compile
    (`handler_syntax_error`, naming file:line:column) or does not export its function
    (`handler_not_exported`), as `modhub validate` reports them. Nothing is written."""
    capabilities = manifest.capabilities
    located = [
        (f"/capabilities/api/routes/{i}/handler", r.handler)
        for i, r in enumerate(capabilities.api.routes)
    ]
    located += [
        (f"/capabilities/jobs/handlers/{i}/handler", j.handler)
        for i, j in enumerate(capabilities.jobs.handlers)
    ]
    events = getattr(capabilities, "events", None)
    located += [
        (f"/capabilities/events/subscribes/{i}/handler", s.handler)
        for i, s in enumerate(getattr(events, "subscribes", None) or ())
    ]
    located = [
        (where, ref)
        for where, ref in located
        if launch.handler_language(ref) == "node" and (folder / split_handler(ref)[0]).is_file()
    ]
    entries = sorted({split_handler(ref)[0] for _, ref in located})
    try:
        exports = compile_files(folder, None, entries)
    except CompileError as exc:
        where = next((w for w, ref in located if split_handler(ref)[0] == exc.file), located[0][0])
        return [Issue(path=where, code="handler_syntax_error", message=exc.detail)]
    issues = []
    for where, ref in located:
        for problem in missing_exports([ref], exports):
            issues.append(Issue(path=where, code="handler_not_exported", message=problem))
    return issues
