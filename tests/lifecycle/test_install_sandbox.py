"""Installs run in the module's sandbox: a dependency's build step is module code too.

The hostile packages are made here (tests/packages.py) and read from a local folder.
"""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modhub.lifecycle.environment import (
    LOG_TAIL_BYTES,
    MAX_LINE_BYTES,
    READY_MARK,
    InstallError,
    PackageIndex,
    create_env,
    env_python,
)
from modhub.sandbox import isolation
from modhub.sandbox.launch import module_uid
from tests.conftest import service_missing
from tests.packages import build_sdist

NO_CAPABILITIES = "0000000000000000"


@pytest.fixture(autouse=True)
def bubblewrap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip (fail under MODHUB_REQUIRE_SERVICES=1) unless installs get bubblewrap here."""
    monkeypatch.delenv("MODHUB_SANDBOX", raising=False)
    if isolation() != "bubblewrap":
        service_missing("bubblewrap (bwrap) is not installed: installs cannot be sandboxed")


@pytest.fixture
def listener() -> Iterator[int]:
    """Yield the port of a TCP server on the host's loopback that greets every client."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def owner() -> str:
    """Return a module name nobody else uses (its uid is its own, even under xdist)."""
    return f"evil-{uuid.uuid4().hex[:10]}"


def platform_files(data: Path) -> dict[str, Path]:
    """Put the platform's secrets where a data dir holds them; return them by name."""
    data.mkdir(parents=True, exist_ok=True)
    files = {"key": data / "secret.key", "db": data / "modhub.db"}
    for path in files.values():
        path.write_text("platform secret")
        path.chmod(0o600)
    return files


def installed_report(env: Path, module: str) -> dict[str, Any]:
    """Return the REPORT the hostile build step baked into its package."""
    found = subprocess.run(
        [str(env_python(env)), "-I", "-c", f"import {module}; print(repr({module}.REPORT))"],
        capture_output=True,
        text=True,
        check=True,
    )
    report: dict[str, Any] = ast.literal_eval(found.stdout.strip())
    return report


def install_sdist(
    tmp_path: Path, package: str, step: str = "", *, name: str | None = None, **options: Any
) -> Path:
    """Build a source package of `package` whose build runs `step`, install it into the
    environment of module `name` under `tmp_path/data`, and return that environment."""
    folder = tmp_path / "index"
    folder.mkdir(exist_ok=True)
    build_sdist(folder, package, "1.0", step)
    name = name or owner()
    env = tmp_path / "data" / "envs" / name / "1.0.0"
    create_env(
        env,
        [f"{package}==1.0"],
        index=PackageIndex(find_links=(str(folder),), offline=True),
        cache_dir=tmp_path / "data" / "cache" / "uv" / name,
        owner=name,
        **options,
    )
    return env


def test_source_packages_are_not_built_by_default(tmp_path: Path) -> None:
    with pytest.raises(InstallError) as raised:
        install_sdist(tmp_path, "mh-evil")
    assert raised.value.requirement == "mh-evil==1.0"
    assert "mh-evil" in raised.value.detail
    assert not list((tmp_path / "data" / "envs").glob("*/1.0.0"))


def test_a_build_step_runs_as_the_module_without_the_data_dir_or_network(
    tmp_path: Path, listener: int
) -> None:
    data = tmp_path / "data"
    secrets = platform_files(data)
    other_env = data / "envs" / "victim" / "1.0.0"
    other_env.mkdir(parents=True)
    targets = {
        "read": [str(secrets["key"]), str(secrets["db"]), "/etc/shadow"],
        "write": [str(data / "pwned"), str(other_env / "pwned"), "/usr/pwned"],
    }
    step = f"""
targets = {targets!r}
def attempt(action, path):
    try:
        action(path)
        return "ok"
    except Exception as exc:
        return type(exc).__name__
report["read"] = {{p: attempt(lambda p: open(p).read(), p) for p in targets["read"]}}
report["write"] = {{p: attempt(lambda p: open(p, "w").write("x"), p) for p in targets["write"]}}
import socket
report["connect"] = attempt(lambda p: socket.create_connection(("127.0.0.1", p), 2), {listener})
"""
    name = owner()
    env = install_sdist(tmp_path, "mh-evil", step, name=name, source_builds=True)
    cache = data / "cache" / "uv" / name
    report = installed_report(env, "mh_evil")
    expected_uid = module_uid(name) if os.getuid() == 0 else os.getuid()
    assert report["uid"] == expected_uid
    assert report["status"]["CapEff"] == NO_CAPABILITIES
    assert report["status"]["CapPrm"] == NO_CAPABILITIES
    assert report["status"]["NoNewPrivs"] == "1"
    assert set(report["read"].values()) <= {"FileNotFoundError", "PermissionError"}, report
    assert "ok" not in report["write"].values(), report
    assert not (data / "pwned").exists()
    assert not (other_env / "pwned").exists()
    assert report["connect"] != "ok"  # an offline index: no network at all
    # The cache is the module's own; the finished environment is modhub's, complete.
    assert cache.stat().st_uid == expected_uid
    assert cache.stat().st_mode & 0o777 == 0o700
    owners = {path.lstat().st_uid for path in [env, *env.rglob("*")]}
    assert owners == {os.getuid()}
    assert (env / READY_MARK).is_file()


def test_a_failed_sandboxed_install_leaves_no_environment(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="mh-broken"):
        install_sdist(tmp_path, "mh-broken", "raise SystemExit('fails')", name="broken")
    assert not (tmp_path / "data" / "envs" / "broken" / "1.0.0").exists()


def test_a_build_steps_output_and_memory_are_bounded(tmp_path: Path) -> None:
    step = """
import sys
sys.stderr.write("x" * (20 * 1024 * 1024) + "\\n")
for i in range(50_000):
    print("line", i, file=sys.stderr)
try:
    hog = bytearray(8 * 1024 * 1024 * 1024)
    report["hog"] = "allocated"
except MemoryError:
    raise SystemExit("the build step could not take 8 GiB")
"""
    lines: list[str] = []
    with pytest.raises(InstallError) as raised:
        install_sdist(tmp_path, "mh-loud", step, source_builds=True, log=lines.append)
    assert "could not take 8 GiB" in raised.value.log
    assert len(raised.value.log.encode()) <= LOG_TAIL_BYTES
    assert lines, "uv reported the failed build"
    assert max(len(line.encode()) for line in lines) <= MAX_LINE_BYTES + 64
    assert any("[truncated" in line for line in lines)


@pytest.mark.parametrize("allowed", [False, True])
def test_url_requirements_reach_uv_only_when_the_operator_allows_them(
    tmp_path: Path, allowed: bool
) -> None:
    requirement = "mh-remote @ https://packages.example/mh_remote-1.0-py3-none-any.whl"
    with pytest.raises(InstallError) as raised:
        create_env(
            tmp_path / "env",
            [requirement],
            index=PackageIndex(offline=True),
            cache_dir=tmp_path / "cache",
            owner=owner(),
            direct_references=allowed,
        )
    refused_before_uv = "is not a valid requirement" in raised.value.detail
    assert refused_before_uv is not allowed, raised.value.detail
    assert raised.value.requirement == requirement
