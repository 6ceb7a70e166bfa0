"""Time each lifecycle step of a module, and compare with `python -m venv` + pip.

Run with `.venv/bin/python bench/lifecycle.py` (`--runs N`, `--classic-runs N`,
`--markdown` to also print the figures as a Markdown table for docs/benchmarks.md).

Everything happens in a fresh temporary data dir with the embedded SQLite database,
through `Lifecycle` as the API uses it (`operation_wait_seconds` is high, so each call
returns when its operation is done). Steps, for each module:

- add bundle: a folder with `module.json` and one handler is unpacked, validated,
  hashed, stored read-only and registered (REGISTERED).
- install+enable: `set_status(ENABLED)` on the REGISTERED module: a uv environment is
  made for the version, its `dependencies.python` installed into it, then ENABLED.
- add v2 bundle: the second version's folder is registered beside the first.
- upgrade: `upgrade(name, "2.0.0")`: a new environment, config carried over, the
  atomic switch, the old environment kept for rollback.
- remove: disable, delete the rows, the code and every environment.

Scenarios: (a) no Python dependencies; (b) one small dependency from a local wheel
folder (`pip_offline=True`, `pip_find_links=[wheel_dir]`): version 1.0.0 of the module
needs `mh-benchlib==1.0.0`, version 2.0.0 needs `mh-benchlib==2.0.0`. Each scenario runs
`--runs` times with fresh module names, in one data dir, so the first run of (b) fills
uv's cache (shown in the max column) and the next ones hard-link from it.

Classic: `python -m venv` then `<venv>/bin/pip install --no-index --find-links
<wheel_dir> mh-benchlib` for the same wheel, `--classic-runs` times.

The "of which uv" rows are the `create-environment` step of the operation (uv venv +
uv pip install), taken from the operation's recorded steps.
"""

from __future__ import annotations

import argparse
import base64
import ensurepip
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import library_versions, machine_summary, utc_now, verdict
from modhub.lifecycle import Lifecycle
from modhub.registry import Status
from modhub.services import Services
from modhub.settings import Settings

TARGET = 2.0  # seconds, for each step of scenario (a)
PACKAGE = "mh-benchlib"
ACTOR = "bench"
STEPS = ("add bundle", "install+enable", "add v2 bundle", "upgrade", "remove")
UV_STEPS = {"install+enable": "of which uv (enable)", "upgrade": "of which uv (upgrade)"}


def build_wheel(folder: Path, name: str, version: str) -> Path:
    """Write a pure-Python wheel of `name` at `version` exposing VERSION; return its path.

    tests/lifecycle/test_environment.py has the same builder for its own package; bench
    does not import from tests/, and this script is the only one in bench/ that needs it.
    """
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f'"""Bench package."""\n\nVERSION = "{version}"\n',
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: modhub bench\n"
        ),
        f"{dist_info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: modhub-bench\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n"
        ),
    }
    record = []
    for path, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def write_module(folder: Path, name: str, version: str, requirements: list[str]) -> Path:
    """Write a module folder: a manifest with one route and its handler; return the folder."""
    root = folder / f"{name}-{version}"
    (root / "handlers").mkdir(parents=True)
    manifest = {
        "name": name,
        "version": version,
        "displayName": f"Bench {name}",
        "description": "A module made by bench/lifecycle.py.",
        "capabilities": {
            "api": {"routes": [{"method": "GET", "path": "/ping", "handler": "handlers/ping.py"}]}
        },
        "dependencies": {"python": requirements},
        "config": {"schema": {"greeting": {"type": "string", "default": "pong"}}},
    }
    (root / "module.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (root / "handlers" / "ping.py").write_text(
        f'"""GET /ping."""\n\n\ndef handler(request):\n    return {{"version": "{version}"}}\n'
    )
    return root


def finished(outcome: Any, what: str) -> str:
    """Check a `(done, result, op_id)` outcome finished; return the operation id."""
    done, _, op_id = outcome
    if not done:
        raise RuntimeError(f"{what} did not finish within operation_wait_seconds")
    return str(op_id)


def step_seconds(services: Services, op_id: str, name: str) -> float:
    """Return how long the operation's step `name` took, from its recorded steps.

    The step's own `finished_at` is used when it is recorded; otherwise the time up to
    the next step's start (the only thing between them is a crash-test checkpoint).
    """
    steps = services.operations.get(op_id).steps
    for i, step in enumerate(steps):
        if step.name != name:
            continue
        if step.finished_at is not None:
            return (step.finished_at - step.started_at).total_seconds()
        if i + 1 < len(steps):
            return (steps[i + 1].started_at - step.started_at).total_seconds()
    return float("nan")


def timed(action: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """Return (seconds, result) of `action(*args, **kwargs)`."""
    start = time.perf_counter()
    result = action(*args, **kwargs)
    return time.perf_counter() - start, result


def run_scenario(
    services: Services, work: Path, label: str, versions: dict[str, list[str]], runs: int
) -> dict[str, list[float]]:
    """Add, install+enable, add v2, upgrade and remove `runs` fresh modules; return timings."""
    lifecycle: Lifecycle = services.lifecycle
    layout = lifecycle.layout
    times: dict[str, list[float]] = {key: [] for key in (*STEPS, *UV_STEPS.values())}
    (v1, req1), (v2, req2) = versions.items()
    for i in range(runs):
        name = f"bench-{label}-{i}"
        src = work / "sources" / name
        first = write_module(src, name, v1, req1)
        second = write_module(src, name, v2, req2)

        seconds, detail = timed(lifecycle.add_bundle, first, actor=ACTOR)
        assert detail.status == Status.REGISTERED, detail.status
        times["add bundle"].append(seconds)

        seconds, outcome = timed(lifecycle.set_status, name, Status.ENABLED, actor=ACTOR)
        op_id = finished(outcome, f"enable {name}")
        assert services.registry.get(name).status == Status.ENABLED
        assert layout.env(name, v1).is_dir()
        times["install+enable"].append(seconds)
        times[UV_STEPS["install+enable"]].append(
            step_seconds(services, op_id, "create-environment")
        )

        seconds, _ = timed(lifecycle.add_bundle, second, actor=ACTOR)
        times["add v2 bundle"].append(seconds)

        seconds, outcome = timed(lifecycle.upgrade, name, v2, actor=ACTOR)
        op_id = finished(outcome, f"upgrade {name}")
        detail = services.registry.get(name)
        assert (detail.version, detail.status) == (v2, Status.ENABLED), detail
        assert layout.env(name, v2).is_dir()
        times["upgrade"].append(seconds)
        times[UV_STEPS["upgrade"]].append(step_seconds(services, op_id, "create-environment"))

        seconds, outcome = timed(lifecycle.remove, name, actor=ACTOR)
        finished(outcome, f"remove {name}")
        assert not (layout.modules / name).exists()
        assert not (layout.envs / name).exists()
        times["remove"].append(seconds)
    return times


def run_classic(work: Path, wheel_dir: Path, runs: int) -> dict[str, list[float]]:
    """Time `python -m venv` + `pip install --no-index --find-links` of the same package."""
    times: dict[str, list[float]] = {"python -m venv": [], "pip install": [], "total": []}
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    env.pop("VIRTUAL_ENV", None)
    for i in range(runs):
        venv = work / "classic" / f"venv-{i}"
        venv_s, _ = timed(
            subprocess.run,
            [sys.executable, "-m", "venv", str(venv)],
            check=True,
            capture_output=True,
            env=env,
        )
        pip_s, _ = timed(
            subprocess.run,
            [
                str(venv / "bin" / "pip"),
                "install",
                "--no-index",
                "--find-links",
                str(wheel_dir),
                f"{PACKAGE}==1.0.0",
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        check = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import mh_benchlib; print(mh_benchlib.VERSION)"],
            check=True,
            capture_output=True,
            text=True,
        )
        assert check.stdout.strip() == "1.0.0", check.stdout
        times["python -m venv"].append(venv_s)
        times["pip install"].append(pip_s)
        times["total"].append(venv_s + pip_s)
        shutil.rmtree(venv)
    return times


def med(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    """Run both scenarios and the classic comparison; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="modules per scenario (default 5)")
    parser.add_argument("--classic-runs", type=int, default=3, help="venv+pip runs (default 3)")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args()

    host = machine_summary()
    started = utc_now()
    with tempfile.TemporaryDirectory(prefix="modhub-bench-") as tmp:
        work = Path(tmp)
        wheel_dir = work / "wheels"
        wheel_dir.mkdir()
        for version in ("1.0.0", "2.0.0"):
            build_wheel(wheel_dir, PACKAGE, version)
        settings = Settings(
            data_dir=work / "data",
            database_url=None,
            pip_offline=True,
            pip_find_links=[str(wheel_dir)],
            operation_wait_seconds=300,
        )
        services = Services.start(settings)
        try:
            wall, a = timed(
                run_scenario, services, work, "a", {"1.0.0": [], "2.0.0": []}, args.runs
            )
            b = run_scenario(
                services,
                work,
                "b",
                {"1.0.0": [f"{PACKAGE}==1.0.0"], "2.0.0": [f"{PACKAGE}==2.0.0"]},
                args.runs,
            )
        finally:
            services.close()
        classic = run_classic(work, wheel_dir, args.classic_runs)

    uv = library_versions("uv")
    print("modhub lifecycle: time per step (seconds, wall clock)")
    print(f"date:    {started}")
    print(f"machine: {host}")
    print(f"libs:    {uv}, pip {ensurepip.version()} (ensurepip), SQLite")
    print(
        f"runs:    {args.runs} modules per scenario (fresh names, one data dir), "
        f"classic {args.classic_runs}×"
    )
    print()
    header = (
        f"{'step':<24} {'(a) median':>10} {'(a) max':>8} {'(b) median':>10} {'(b) max':>8}"
        f"  target (a) < {TARGET:g} s"
    )
    print(header)
    rows: list[tuple[str, float, float, float, float, str]] = []
    for step in (*STEPS, *UV_STEPS.values()):
        mark = ""
        if step in STEPS:
            mark = verdict(max(a[step]) < TARGET)
        row = (step, med(a[step]), max(a[step]), med(b[step]), max(b[step]), mark)
        rows.append(row)
        print(
            f"{row[0]:<24} {row[1]:>10.3f} {row[2]:>8.3f} {row[3]:>10.3f} {row[4]:>8.3f}  {row[5]}"
        )
    print()
    print(f"classic, {PACKAGE} from the same wheel folder ({args.classic_runs}×, median):")
    for label, values in classic.items():
        print(f"  {label:<22} {med(values):>7.3f}  (max {max(values):.3f})")
    modhub_b = med(b["install+enable"])
    print(
        f"  modhub install+enable (b) {modhub_b:.3f} s = "
        f"{med(classic['total']) / modhub_b:.1f}× faster than venv + pip"
    )
    print()
    print(f"(a) took {wall:.1f} s for {args.runs} full lifecycles")
    print("target: every run of every step of (a) under 2 s (PASS/MISS judged on the max)")

    if args.markdown:
        print()
        print(f"Run on {started}, {host}; {uv}, SQLite.")
        print(f"{args.runs} modules per scenario, classic {args.classic_runs}×.")
        print()
        print(
            "| step | (a) no deps: median | (a) max | (b) one wheel: median | (b) max | (a) < 2 s |"
        )
        print("| --- | ---: | ---: | ---: | ---: | --- |")
        for step, am, ax, bm, bx, mark in rows:
            print(f"| {step} | {am:.3f} s | {ax:.3f} s | {bm:.3f} s | {bx:.3f} s | {mark} |")
        print()
        print(f"| classic, `{PACKAGE}` from the same wheel folder | median | max |")
        print("| --- | ---: | ---: |")
        for label, values in classic.items():
            print(f"| {label} | {med(values):.3f} s | {max(values):.3f} s |")


if __name__ == "__main__":
    main()
