"""Apply each break of mutation/breaks.py to a copy of the tree and run its tests.

    .venv/bin/python mutation/run.py [-k WORD] [--keep]

The shared working tree is never touched: its files (tracked and new, not ignored) are
copied to a temporary folder, and there the tests run with that copy's `src`
first on the path. First the breaks' tests must pass on the unbroken copy; then each
break is applied alone, its tests run (stopping at the first failure), and the file is
restored. A break is caught when a test fails; the run exits 1 if any break survives.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from breaks import BREAKS, Break

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv" / "bin" / "python"
PYTEST = ("-m", "pytest", "-q", "-x", "-p", "no:xdist", "-p", "no:cacheprovider")


def copy_tree(into: Path) -> None:
    """Copy the working tree's files (tracked and new, not ignored) into `into`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def run_tests(copy: Path, tests: tuple[str, ...], log: Path) -> int:
    """Run `tests` in the copy; return pytest's exit code (output appended to `log`)."""
    env = {**os.environ, "PYTHONPATH": str(copy / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    with log.open("a") as out:
        out.write(f"\n$ pytest {' '.join(tests)}\n")
        out.flush()
        done = subprocess.run(
            [str(PYTHON), *PYTEST, *tests], cwd=copy, env=env, stdout=out, stderr=out
        )
    return done.returncode


def apply(copy: Path, brk: Break) -> str:
    """Apply `brk` in the copy; return the file's text before it."""
    path = copy / brk.path
    text = path.read_text()
    found = text.count(brk.old)
    if found != 1:
        raise SystemExit(f"break {brk.name!r}: its text is found {found} times in {brk.path}")
    path.write_text(text.replace(brk.old, brk.new))
    return text


def main() -> int:
    """Run every break (or those whose name contains -k); print a table and the count."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-k", default="", help="only the breaks whose name contains this")
    parser.add_argument("--keep", action="store_true", help="keep the copy and its log")
    args = parser.parse_args()
    chosen = [b for b in BREAKS if args.k.lower() in b.name.lower()]
    copy = Path(tempfile.mkdtemp(prefix="modhub-mutation-"))
    log = copy / "mutation.log"
    try:
        copy_tree(copy)
        every = tuple(dict.fromkeys(t for b in chosen for t in b.tests))
        if run_tests(copy, every, log) != 0:
            print(f"the breaks' tests fail on the unbroken tree; see {log}")
            args.keep = True
            return 2
        survivors = []
        for brk in chosen:
            before = apply(copy, brk)
            started = time.monotonic()
            try:
                code = run_tests(copy, brk.tests, log)
            finally:
                (copy / brk.path).write_text(before)
            verdict = "caught" if code == 1 else ("SURVIVED" if code == 0 else f"error {code}")
            if code != 1:
                survivors.append(brk.name)
            took = time.monotonic() - started
            print(f"{verdict:9} {took:6.1f}s  {brk.path}: {brk.name}", flush=True)
        print(f"{len(chosen) - len(survivors)} of {len(chosen)} breaks caught")
        return 1 if survivors else 0
    finally:
        if args.keep:
            print(f"copy and log kept in {copy}")
        else:
            shutil.rmtree(copy, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
