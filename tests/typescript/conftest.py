"""Node worker fixtures: the TypeScript test modules compiled once per session with the
pinned esbuild, and a sandbox whose modules use them (`tests/sandbox/conftest.py`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from modhub.lifecycle import typescript
from modhub.lifecycle.environment import PackageIndex, create_env
from modhub.sandbox import ModuleRuntime
from tests.sandbox.conftest import Sandbox
from tests.web.conftest import browser, page  # noqa: F401 (Chromium, for the console test)

MODULES = Path(__file__).parent / "modules"
ATTACKS = "handlers/attacks.ts"


def node_ready() -> bool:
    """Return whether node and the pinned esbuild (tools/node) are installed."""
    return (
        shutil.which("node") is not None
        and (typescript.tools_dir() / "node_modules" / "esbuild").is_dir()
    )


requires_node = pytest.mark.skipif(
    not node_ready(), reason="node or tools/node's esbuild is missing (make install)"
)


@pytest.fixture(scope="session")
def mixed_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return one environment with a Python venv and the hostile module's compiled .ts."""
    root = tmp_path_factory.mktemp("node-env")
    env = root / "env"

    def finish(path: Path) -> None:
        typescript.compile_files(MODULES / "hostile", path / "node", [ATTACKS, "jobs/sync.mjs"])

    create_env(
        env, [], index=PackageIndex(offline=True), cache_dir=root / "uv-cache", finish=finish
    )
    return env


@pytest.fixture
def node_sandbox(tmp_path: Path, mixed_env: Path) -> Sandbox:
    """Return an empty data dir whose modules use the compiled environment."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    return Sandbox(data_dir, mixed_env)


def node_runtime(sandbox: Sandbox, name: str, **limits: object) -> ModuleRuntime:
    """Return the runtime of a module whose code is `modules/hostile` (the .ts attacks)."""
    folder = sandbox.data_dir / "modules" / name / "1.0.0"
    if not folder.exists():
        shutil.copytree(MODULES / "hostile", folder)
    return ModuleRuntime(name=name, version="1.0.0", code=folder, env=sandbox.env, **limits)  # type: ignore[arg-type]
