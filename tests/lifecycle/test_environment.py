"""Per-module environments made with uv: creation, offline installs, failures, scrubbing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modhub.lifecycle import environment
from modhub.lifecycle.environment import (
    LOG_TAIL_BYTES,
    InstallError,
    PackageIndex,
    create_env,
    env_python,
    installed_packages,
    remove_env,
    scrubbed_env,
)
from tests.packages import build_wheel

PACKAGE = "mh-testlib"
VERSIONS = ("1.0.0", "2.0.0")


@pytest.fixture(scope="session")
def wheel_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a folder holding mh-testlib 1.0.0 and 2.0.0 wheels."""
    folder = tmp_path_factory.mktemp("wheels")
    for version in VERSIONS:
        build_wheel(folder, PACKAGE, version)
    return folder


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a uv cache shared by the session, on the same filesystem as the envs."""
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture
def offline(wheel_folder: Path) -> PackageIndex:
    """Return an index that reads only the local wheel folder."""
    return PackageIndex(find_links=(str(wheel_folder),), offline=True)


def run_python(env: Path, code: str) -> str:
    """Run `code` with the environment's interpreter and return its stripped output."""
    return subprocess.run(
        [str(env_python(env)), "-c", code], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()


def test_env_without_requirements_runs_python(
    tmp_path: Path, cache_dir: Path, offline: PackageIndex
) -> None:
    env = tmp_path / "env"
    lines: list[str] = []
    create_env(env, [], index=offline, cache_dir=cache_dir, log=lines.append)
    assert env_python(env).exists()
    assert run_python(env, "import sys; print(sys.prefix)") == str(env)
    assert installed_packages(env) == {}
    assert any("Creating virtual environment" in line for line in lines)


def test_two_envs_hold_conflicting_versions(
    tmp_path: Path, cache_dir: Path, offline: PackageIndex
) -> None:
    for version in VERSIONS:
        create_env(
            tmp_path / version, [f"{PACKAGE}=={version}"], index=offline, cache_dir=cache_dir
        )
    for version in VERSIONS:
        env = tmp_path / version
        assert run_python(env, "import mh_testlib; print(mh_testlib.VERSION)") == version
        assert installed_packages(env) == {PACKAGE: version}


def test_install_streams_log_lines(tmp_path: Path, cache_dir: Path, offline: PackageIndex) -> None:
    lines: list[str] = []
    create_env(
        tmp_path / "env", [f"{PACKAGE}>=1"], index=offline, cache_dir=cache_dir, log=lines.append
    )
    assert all("\n" not in line for line in lines)
    assert any("Installed 1 package" in line for line in lines), lines
    assert any(f"{PACKAGE}==2.0.0" in line for line in lines), lines


def test_missing_requirement_fails_and_leaves_nothing(
    tmp_path: Path, cache_dir: Path, offline: PackageIndex
) -> None:
    env = tmp_path / "env"
    with pytest.raises(InstallError) as caught:
        create_env(
            env,
            [f"{PACKAGE}==1.0.0", "mh-does-not-exist>=1"],
            index=offline,
            cache_dir=cache_dir,
        )
    error = caught.value
    assert "mh-does-not-exist" in error.detail
    assert error.requirement == "mh-does-not-exist>=1"
    assert error.extra["requirement"] == "mh-does-not-exist>=1"
    assert "mh-does-not-exist" in error.extra["log"]
    assert (error.status, error.kind, error.title) == (422, "install-failed", "Install failed")
    assert not env.exists()


def test_unavailable_version_is_named(
    tmp_path: Path, cache_dir: Path, offline: PackageIndex
) -> None:
    with pytest.raises(InstallError) as caught:
        create_env(tmp_path / "env", [f"{PACKAGE}>=3"], index=offline, cache_dir=cache_dir)
    assert caught.value.requirement == f"{PACKAGE}>=3"
    assert f"'{PACKAGE}>=3'" in caught.value.detail
    assert not (tmp_path / "env").exists()


@pytest.mark.parametrize(
    "requirement",
    ["--index-url=http://evil.example", "ok\n--extra-index-url http://evil.example", "a b c"],
)
def test_requirement_that_is_not_pep508_is_refused_before_uv_runs(
    tmp_path: Path, cache_dir: Path, offline: PackageIndex, requirement: str
) -> None:
    with pytest.raises(InstallError, match="not a valid requirement"):
        create_env(tmp_path / "env", [requirement], index=offline, cache_dir=cache_dir)
    assert not (tmp_path / "env").exists()


def test_existing_folder_is_refused(tmp_path: Path, cache_dir: Path, offline: PackageIndex) -> None:
    env = tmp_path / "env"
    env.mkdir()
    (env / "keep").write_text("mine")
    with pytest.raises(FileExistsError):
        create_env(env, [], index=offline, cache_dir=cache_dir)
    assert (env / "keep").read_text() == "mine"


def test_empty_folder_is_accepted(tmp_path: Path, cache_dir: Path, offline: PackageIndex) -> None:
    env = tmp_path / "env"
    env.mkdir()
    create_env(env, [], index=offline, cache_dir=cache_dir)
    assert env_python(env).exists()


def test_timeout_kills_uv_and_removes_env(
    tmp_path: Path, cache_dir: Path, offline: PackageIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = tmp_path / "slow-uv"
    slow.write_text('#!/bin/sh\nmkdir -p "$6"\necho starting\nexec sleep 30\n')
    slow.chmod(0o755)
    monkeypatch.setattr(environment, "uv_bin", lambda: str(slow))
    env = tmp_path / "env"
    lines: list[str] = []
    started = time.monotonic()
    # 2 s: time for the script to print its line on a loaded machine (0.5 s was not, once)
    with pytest.raises(InstallError, match=r"did not finish within 2 s") as caught:
        create_env(env, [], index=offline, cache_dir=cache_dir, log=lines.append, timeout=2)
    assert time.monotonic() - started < 25  # killed, not waited for (its sleep is 30 s)
    assert lines == ["starting"]
    assert caught.value.extra["log"] == "starting"
    assert not env.exists()


def test_uv_gets_a_scrubbed_environment(
    tmp_path: Path, cache_dir: Path, offline: PackageIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODHUB_SECRET_KEY", "do-not-leak")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.setenv("UV_INDEX_URL", "http://evil.example/simple")
    seen: list[dict[str, str]] = []
    real_popen = subprocess.Popen

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(dict(kwargs["env"]))  # type: ignore[call-overload]
        return real_popen(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(subprocess, "Popen", spy)
    create_env(tmp_path / "env", [f"{PACKAGE}==1.0.0"], index=offline, cache_dir=cache_dir)
    assert len(seen) == 2  # uv venv, uv pip install
    for env in seen:
        assert not any(name.startswith(("MODHUB_", "PYTHON")) for name in env)
        assert "UV_INDEX_URL" not in env
        assert env["UV_CACHE_DIR"] == str(cache_dir)
        assert env["PATH"] == os.environ["PATH"]


def test_scrubbed_env_keeps_only_the_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODHUB_SECRET_KEY", "do-not-leak")
    monkeypatch.setenv("MODHUB_DATABASE_URL", "postgresql://u:p@h/db")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nope")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    env = scrubbed_env({"UV_CACHE_DIR": "/cache"})
    assert "MODHUB_SECRET_KEY" not in env
    assert "MODHUB_DATABASE_URL" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["HTTPS_PROXY"] == "http://proxy:3128"
    assert env["LC_ALL"] == "C.UTF-8"
    assert env["UV_CACHE_DIR"] == "/cache"
    assert env["NO_COLOR"] == "1"


def test_package_index_options() -> None:
    assert PackageIndex().uv_options() == []
    assert PackageIndex(index_url="https://pypi.example/simple").uv_options() == [
        "--index-url",
        "https://pypi.example/simple",
    ]
    assert PackageIndex(
        index_url="https://ignored.example/simple", find_links=("/w1", "/w2"), offline=True
    ).uv_options() == ["--offline", "--no-index", "--find-links", "/w1", "--find-links", "/w2"]


def test_failed_requirement_matches_whole_normalized_names() -> None:
    output = "error: No solution\n  cause: Because foo-bar-baz was not found and you require it"
    assert environment._failed_requirement(output, ["foo-bar>=1", "Foo_Bar.Baz"]) == "Foo_Bar.Baz"
    assert environment._failed_requirement(output, ["foo-bar>=1"]) is None


def test_log_tail_is_at_most_4_kb() -> None:
    tail = environment._tail("é" * 10_000)
    assert len(tail.encode()) <= LOG_TAIL_BYTES
    assert tail == "é" * len(tail)


def test_remove_env_is_idempotent(tmp_path: Path) -> None:
    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    remove_env(env)
    remove_env(env)
    assert not env.exists()


def test_installed_packages_needs_an_env(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        installed_packages(tmp_path / "nothing")


def test_create_env_is_fast(tmp_path: Path, cache_dir: Path, offline: PackageIndex) -> None:
    create_env(tmp_path / "warm", [f"{PACKAGE}==1.0.0"], index=offline, cache_dir=cache_dir)
    started = time.monotonic()
    create_env(tmp_path / "bare", [], index=offline, cache_dir=cache_dir)
    bare = time.monotonic() - started
    started = time.monotonic()
    create_env(tmp_path / "one", [f"{PACKAGE}==1.0.0"], index=offline, cache_dir=cache_dir)
    one = time.monotonic() - started
    print(f"create_env: no requirements {bare:.3f} s, one local wheel {one:.3f} s")
    assert bare < 2
    assert one < 2


def test_env_uses_the_given_python(tmp_path: Path, cache_dir: Path, offline: PackageIndex) -> None:
    env = tmp_path / "env"
    create_env(env, [], index=offline, cache_dir=cache_dir, python=sys.executable)
    expected = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert run_python(env, "import sys; print('%d.%d' % sys.version_info[:2])") == expected
