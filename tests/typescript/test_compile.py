"""TypeScript at install and in `modhub validate`: esbuild (the pinned one in tools/node)
compiles the Node handlers into the environment, a syntax error names file:line:column and
fails the install leaving no environment, a handler not exported is refused, and
package.json dependencies come from `npm ci` in the install sandbox."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from modhub.cli import app
from modhub.lifecycle import typescript
from modhub.lifecycle.environment import InstallError, PackageIndex, create_env
from modhub.manifest import Manifest
from tests.typescript.conftest import requires_node

pytestmark = requires_node
GOOD = (
    "export async function handler(request: { path: string }) { return { path: request.path }; }\n"
)


def module(folder: Path, files: dict[str, str], handlers: list[str], **extra: Any) -> Manifest:
    """Write a module with `files` whose routes are `handlers`; return its manifest."""
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    data = {
        "name": "ts-mod",
        "version": "1.0.0",
        "displayName": "TS",
        "capabilities": {
            "api": {
                "routes": [
                    {"method": "GET", "path": f"/r{i}", "handler": h}
                    for i, h in enumerate(handlers)
                ]
            }
        },
        **extra,
    }
    (folder / "module.json").write_text(json.dumps(data))
    return Manifest.model_validate(data)


def build(manifest: Manifest, code: Path, env: Path) -> None:
    """Make the environment of `code` as an install does (no Python requirements)."""
    create_env(
        env,
        [],
        index=PackageIndex(offline=True),
        cache_dir=env.parent / "uv-cache",
        finish=lambda path: typescript.build(
            manifest, code, path, owner_uid=0, cache_dir=env.parent / "npm", log=print
        ),
    )


def test_install_compiles_each_handler_into_the_environment(tmp_path: Path) -> None:
    code = tmp_path / "code"
    manifest = module(
        code,
        {
            "handlers/a.ts": "import { twice } from '../lib/twice';\n"
            "export default (r: unknown): number => twice(21);\n",
            "lib/twice.ts": "export const twice = (n: number): number => n * 2;\n",
            "handlers/b.mjs": "export function list() { return []; }\n",
        },
        ["handlers/a.ts", "handlers/b.mjs:list"],
    )
    env = tmp_path / "env"
    build(manifest, code, env)
    assert (env / ".modhub-ready").is_file()
    compiled = env / "node" / "handlers" / "a.mjs"
    assert "n * 2" in compiled.read_text()  # its own imports are bundled in
    assert (env / "node" / "handlers" / "b.mjs").is_file()
    assert not (env / "node" / "lib").exists()


def test_a_syntax_error_fails_the_install_naming_file_line_and_column(tmp_path: Path) -> None:
    code = tmp_path / "code"
    manifest = module(
        code,
        {"handlers/bad.ts": "export function handler() {\n  return {;\n}\n"},
        ["handlers/bad.ts"],
    )
    env = tmp_path / "env"
    with pytest.raises(typescript.CompileError) as caught:
        build(manifest, code, env)
    assert caught.value.detail.startswith("handlers/bad.ts:2:11: ")
    assert (caught.value.file, caught.value.line, caught.value.column) == ("handlers/bad.ts", 2, 11)
    assert not env.exists()  # a failed install leaves no environment


def test_a_handler_that_is_not_exported_fails_the_install(tmp_path: Path) -> None:
    code = tmp_path / "code"
    manifest = module(
        code,
        {"handlers/a.ts": "export function other() {}\n", "handlers/b.ts": GOOD},
        ["handlers/a.ts", "handlers/b.ts:list"],
    )
    with pytest.raises(InstallError) as caught:
        build(manifest, code, tmp_path / "env")
    assert caught.value.detail == (
        "'handlers/a.ts' does not export 'handler' or a default export; "
        "'handlers/b.ts' does not export 'list'"
    )


def test_a_package_json_needs_its_lockfile(tmp_path: Path) -> None:
    code = tmp_path / "code"
    manifest = module(
        code, {"handlers/a.ts": GOOD, "package.json": '{"name": "x"}'}, ["handlers/a.ts"]
    )
    with pytest.raises(InstallError, match=r"package-lock\.json"):
        build(manifest, code, tmp_path / "env")


def test_npm_dependencies_are_installed_from_the_cache_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small package made here, put in the module's npm cache, and a lockfile naming it:
    # `npm ci --offline` installs it without the network, in the install sandbox.
    package = tmp_path / "tiny"
    package.mkdir()
    (package / "package.json").write_text(
        '{"name": "modhub-tiny", "version": "1.0.0", "type": "module", "main": "index.js"}'
    )
    (package / "index.js").write_text("export const shout = (s) => s.toUpperCase() + '!';\n")
    packed = json.loads(
        subprocess.run(
            ["npm", "pack", "--json", "--pack-destination", str(tmp_path)],
            cwd=package,
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    )[0]
    tarball = tmp_path / packed["filename"]
    cache = tmp_path / "npm"
    subprocess.run(
        ["npm", "cache", "add", str(tarball), "--cache", str(cache)],
        check=True,
        capture_output=True,
    )
    code = tmp_path / "code"
    lock = {
        "name": "ts-mod",
        "version": "1.0.0",
        "lockfileVersion": 3,
        "requires": True,
        "packages": {
            "": {"name": "ts-mod", "version": "1.0.0", "dependencies": {"modhub-tiny": "1.0.0"}},
            "node_modules/modhub-tiny": {
                "version": "1.0.0",
                "resolved": "https://registry.npmjs.org/modhub-tiny/-/modhub-tiny-1.0.0.tgz",
                "integrity": packed["integrity"],
            },
        },
    }
    manifest = module(
        code,
        {
            "handlers/a.ts": "import { shout } from 'modhub-tiny';\n"
            "export const handler = () => shout('hi');\n",
            "package.json": json.dumps(
                {"name": "ts-mod", "version": "1.0.0", "dependencies": {"modhub-tiny": "1.0.0"}}
            ),
            "package-lock.json": json.dumps(lock),
        },
        ["handlers/a.ts"],
    )
    monkeypatch.setenv("MODHUB_NPM_OFFLINE", "1")
    env = tmp_path / "env"
    build(manifest, code, env)
    installed = env / "node" / "node_modules" / "modhub-tiny" / "index.js"
    assert "toUpperCase" in installed.read_text()
    # The handler imports it at run time (packages stay imports in the compiled file).
    assert 'from "modhub-tiny"' in (env / "node" / "handlers" / "a.mjs").read_text()


# -- modhub validate ---------------------------------------------------------------------------


def validate(folder: Path) -> tuple[int, dict[str, Any]]:
    outcome = CliRunner().invoke(app, ["validate", str(folder), "--json"])
    return outcome.exit_code, json.loads(outcome.stdout)


def test_validate_checks_that_handlers_compile_and_are_exported(tmp_path: Path) -> None:
    good = tmp_path / "good"
    module(good, {"handlers/a.ts": GOOD}, ["handlers/a.ts"])
    assert validate(good) == (0, {"valid": True, "errors": [], "warnings": []})

    broken = tmp_path / "broken"
    module(
        broken,
        {"handlers/a.ts": GOOD, "handlers/b.ts": "export const = 1;\n"},
        ["handlers/a.ts", "handlers/b.ts"],
    )
    code, result = validate(broken)
    assert code == 1
    [error] = result["errors"]
    assert error["path"] == "/capabilities/api/routes/1/handler"
    assert error["code"] == "handler_syntax_error"
    assert error["message"].startswith("handlers/b.ts:1:14: ")

    unexported = tmp_path / "unexported"
    module(unexported, {"handlers/a.ts": GOOD}, ["handlers/a.ts:list"])
    code, result = validate(unexported)
    assert code == 1
    assert result["errors"] == [
        {
            "path": "/capabilities/api/routes/0/handler",
            "code": "handler_not_exported",
            "message": "'handlers/a.ts' does not export 'list'",
        }
    ]


# -- pages -------------------------------------------------------------------------------------


def page_module(folder: Path, component: str, text: str) -> Manifest:
    module(folder, {"handlers/a.ts": GOOD, component: text}, ["handlers/a.ts"])
    data = json.loads((folder / "module.json").read_text())
    page = {"path": "/p", "component": component, "title": "P"}
    data["capabilities"]["ui"] = {"pages": [page]}
    (folder / "module.json").write_text(json.dumps(data))
    return Manifest.model_validate(data)


def test_a_tsx_page_with_mount_is_compiled_for_the_console(tmp_path: Path) -> None:
    code = tmp_path / "code"
    text = (
        "export function mount(el: HTMLElement, ctx: { apiBase: string }) {\n"
        "  el.textContent = `api at ${ctx.apiBase}`;\n}\n"
        "export function unmount(el: HTMLElement) { el.textContent = ''; }\n"
    )
    manifest = page_module(code, "pages/Main.tsx", text)
    env = tmp_path / "env"
    build(manifest, code, env)
    compiled = typescript.page_output(env, "pages/Main.tsx")
    assert compiled == env / "ui" / "pages" / "Main.js"
    assert "api at" in compiled.read_text()
    assert typescript.page_output(env, "pages/Main.js") is None  # served as it is


def test_a_react_page_needs_react_in_the_modules_package_json(tmp_path: Path) -> None:
    code = tmp_path / "code"
    text = "export default function Page() { return <p>hi</p>; }\n"
    manifest = page_module(code, "pages/Main.tsx", text)
    env = tmp_path / "env"
    with pytest.raises(typescript.CompileError) as caught:
        build(manifest, code, env)
    assert caught.value.detail.startswith("pages/Main.tsx")
    assert "react and react-dom in the module's package.json" in caught.value.detail
    assert not env.exists()
