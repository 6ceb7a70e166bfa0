"""Differential test of modhub.semver against npm's own semver@7 package."""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest

from modhub import semver

pytestmark = pytest.mark.node

SEED = 20240611
PAIR_COUNT = 6000
MUTATED_RANGE_COUNT = 1500
MAX_SATISFYING_LISTS = 48
SORT_LISTS = 24
COMPARE_PAIRS = 400
SHOWN_DISAGREEMENTS = 20
NPM_INSTALL_ARGS = ("--no-audit", "--no-fund", "semver@7")

NODE_SCRIPT = r"""
'use strict'
const fs = require('fs')
const path = require('path')
const [semverDir, inPath, outPath] = process.argv.slice(2)
const pkgDir = path.join(semverDir, 'node_modules', 'semver')
const semver = require(pkgDir)
const input = JSON.parse(fs.readFileSync(inPath, 'utf8'))
const out = {
  version: JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8')).version,
  satisfies: input.pairs.map(([v, r]) => semver.satisfies(v, r)),
  validRange: input.ranges.map((r) => semver.validRange(r) !== null),
  maxSatisfying: input.lists.map(([vs, r]) => semver.maxSatisfying(vs, r)),
  sort: input.sorts.map((vs) => semver.sort(vs.slice())),
  compare: input.compares.map(([a, b]) => semver.compare(a, b)),
}
fs.writeFileSync(outPath, JSON.stringify(out))
"""

PRERELEASES = ("alpha", "alpha.1", "alpha.beta", "beta", "beta.2", "beta.11", "rc.1", "0", "1")
BUILDS = ("build.1", "001", "sha-5114f85", "x.7")
OPERATORS = ("", "=", ">", ">=", "<", "<=")
JOINERS = (" || ", "||", " ||", "|| ", "  ||  ")
VERSION_IN_RANGE = re.compile(r"(?<![\d.])\d+(?:\.\d+){0,2}(?:-[0-9A-Za-z.-]+)?")

# Ranges npm documents or that hit corner cases of its parser.
EDGE_RANGES = (
    "",
    "*",
    "x",
    "X.X.X",
    "1.x",
    "1.2.*",
    ">=0.0.0",
    "<0.x",
    ">*",
    "<*",
    ">=*",
    "* || 1.2.3-beta",
    "<0.0.0-0 || 1.2.3",
    "1.x.3",
    "x.1",
    "1.*.2",
    ">=1.0.0 +build",
    "1.2.3+build",
    "1.2+build",
    "1.2.3 - 2.3.4+build",
    "^0.0.3",
    "^0.0",
    "^0.0.x",
    "^0.2",
    "^0.2.3",
    "^0.x",
    "^1.2.3-alpha",
    "^0.0.3-beta",
    "~0",
    "~>1.2",
    "~ 1.2.3",
    "^ 1.2.3",
    ">= 1.2.3",
    "> 1.2.3 < 1.2.5",
    "= 1.2.3",
    ">=1.2.3-alpha <1.2",
    "^1.2.3 >=2.0.0-alpha",
    ">=2.0.0-alpha ^1.2.3",
    "1.2.3-beta - 2",
    "1.2 - 3.4",
    "1.2.3 - 2.3.4",
    "1.2.3 - 2.3.4-rc.1",
    "v1.2.3",
    "=1.2.3",
    "=v1.2.3",
    "< 2",
    "<=1.x",
    ">1.2",
    ">1",
    "<=1.2.x",
    "1.2.3 || ",
    "||",
    "\t>=1.0.0\n<2.0.0 ",
    "1.2.3\u00a0-\u00a02.0.0",
    "^9007199254740991",
    "9007199254740991.0.0 - 9007199254740992.0.0",
    ">=9007199254740991.0.0",
    ">=1.0.0 ||| 2",
    "1.2.3 - 2.3.4 - 3",
    ">=>1.2.3",
    "<>1.0.0",
    "^^1",
    "~1.2.3beta",
    "1.2.3-",
    "1.2.٣",
    ">= ",
    "1 - ",
    "- 1",
    "v",
    "abc",
    # npm's 256-character and MAX_SAFE_INTEGER limits
    "1.2.3-" + "a" * 250,
    "1.2.3-" + "a" * 251,
    "^1.2.3-" + "a" * 250,
    "v" * 300 + "1.2.3",
    "1.2.3" + "+a" * 300,
    "1.2." + "9" * 300,
)

# Pairs where nodesemver's own range parser (an older npm port) got npm@7 wrong.
EDGE_PAIRS = (
    ("1.2.3-beta", "* || 1.2.3-beta"),
    ("2.0.0-beta", "^1.2.3 >=2.0.0-alpha"),
    ("1.2.0-beta", ">=1.2.0-alpha <1.2"),
    ("1.3.0-beta", ">=1.3.0-alpha <=1.2"),
    ("0.0.0-alpha", ">=0.0.0 <=0.0.0-beta"),
    ("0.0.0-alpha", "<0.x || 0.0.0-alpha"),
    ("1.0.3", "1.x.3"),
    ("1.0.0", ">=1.0.0 +build"),
    ("1.2.0", "1.2+build"),
    ("9007199254740991.0.0", "^9007199254740991"),
    ("9007199254740991.0.0", ">=9007199254740991.0.0"),
    ("v1.2.3", "^1"),
    (" 1.2.3 ", "1.2.3"),
    ("1.2.3-01", "*"),
    ("1.2.٣", "*"),
    ("1.2.3", "\t>=1.0.0\n<2.0.0 "),
)

ODD_VERSIONS = (
    "v1.2.3",
    " 1.2.3 ",
    "\t1.2.3\n",
    "\u00a01.2.3",
    "=1.2.3",
    "1.2",
    "1",
    "01.2.3",
    "1.02.3",
    "1.2.3.4",
    "",
    "x",
    "1.2.3-",
    "1.2.3+",
    "1.2.3-01",
    "1.2.3-beta..1",
    "1.2.٣",
    "9007199254740991.0.0",
    "9007199254740992.0.0",
    "1.2.3-" + "a" * 260,
)


class Generator:
    """Make versions and ranges from a small numeric domain so they often match."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def number(self) -> str:
        return str(self.rng.choice((0, 0, 1, 1, 2, 2, 3, 10)))

    def prerelease(self) -> str:
        return self.rng.choice(PRERELEASES)

    def version(self, pre: float = 0.3, build: float = 0.08) -> str:
        text = f"{self.number()}.{self.number()}.{self.number()}"
        if self.rng.random() < pre:
            text += "-" + self.prerelease()
        if self.rng.random() < build:
            text += "+" + self.rng.choice(BUILDS)
        return text

    def partial(self) -> str:
        """Return a full, partial or wildcard version as found in ranges."""
        x = self.rng.choice(("x", "X", "*"))
        major, minor, patch = self.number(), self.number(), self.number()
        return self.rng.choice(
            (
                major,
                f"{major}.{minor}",
                f"{major}.{minor}.{patch}",
                f"{major}.{minor}.{patch}",
                f"{major}.{minor}.{patch}-{self.prerelease()}",
                f"{major}.{minor}.{patch}-{self.prerelease()}",
                f"{major}.{x}",
                f"{major}.{minor}.{x}",
                f"{major}.{x}.{x}",
                x,
                f"0.{minor}",
                f"0.0.{patch}",
                f"0.0.{patch}-{self.prerelease()}",
                f"0.{minor}.{patch}",
            )
        )

    def atom(self) -> str:
        """Return one caret, tilde, x-range or comparator token."""
        kind = self.rng.random()
        space = " " if self.rng.random() < 0.2 else ""
        if kind < 0.25:
            return "^" + space + self.partial()
        if kind < 0.45:
            return self.rng.choice(("~", "~", "~>")) + space + self.partial()
        if kind < 0.55:
            return self.partial()
        if kind < 0.58:
            return self.rng.choice(("*", "x", ""))
        operator = self.rng.choice(OPERATORS)
        target = self.version(pre=0.35, build=0.03) if self.rng.random() < 0.7 else self.partial()
        return operator + space + target

    def comparator_set(self) -> str:
        if self.rng.random() < 0.15:
            return f"{self.partial()} - {self.partial()}"
        count = self.rng.choices((1, 2, 3), weights=(60, 32, 8))[0]
        return " ".join(self.atom() for _ in range(count))

    def range(self) -> str:
        count = self.rng.choices((1, 2, 3), weights=(65, 25, 10))[0]
        text = self.rng.choice(JOINERS).join(self.comparator_set() for _ in range(count))
        if self.rng.random() < 0.05:
            text = self.rng.choice(("  ", "\t", " ")) + text + self.rng.choice(("", " ", "\n"))
        return text

    def mutate(self, text: str) -> str:
        """Insert, delete or replace one character to probe the grammar's edges."""
        position = self.rng.randrange(len(text) + 1)
        char = self.rng.choice("^~<>=-|. xX*v01a+")
        operation = self.rng.randrange(3)
        if operation == 0 or not text:
            return text[:position] + char + text[position:]
        position = min(position, len(text) - 1)
        if operation == 1:
            return text[:position] + text[position + 1 :]
        return text[:position] + char + text[position + 1 :]

    def pair_version(self, range_: str = "") -> str:
        """Return a version, often one on or next to a bound written in ``range_``."""
        roll = self.rng.random()
        if roll < 0.04:
            return self.rng.choice(ODD_VERSIONS)
        bounds = VERSION_IN_RANGE.findall(range_)
        if roll < 0.85 and bounds:
            return self.near(self.rng.choice(bounds))
        return self.version(pre=0.2)

    def near(self, bound: str) -> str:
        """Return a version at, just below or just above a (partial) version."""
        core, _, pre = bound.partition("-")
        parts = [int(p) for p in core.split(".")] + [0, 0]
        parts = parts[:3]
        step = self.rng.choice((0, 0, 0, 1, -1))
        index = self.rng.randrange(3)
        parts[index] = max(0, parts[index] + step)
        text = ".".join(str(p) for p in parts)
        roll = self.rng.random()
        if pre and roll < 0.4:
            return f"{text}-{pre}"
        if roll > 0.8:
            return f"{text}-{self.prerelease()}"
        return text


def build_cases() -> dict[str, Any]:
    """Build every input for node deterministically from SEED."""
    gen = Generator(SEED)
    generated = [gen.range() for _ in range(PAIR_COUNT // 2)]
    mutated = [gen.mutate(gen.rng.choice(generated)) for _ in range(MUTATED_RANGE_COUNT)]
    range_pool = list(EDGE_RANGES) + generated + mutated
    pairs: list[tuple[str, str]] = list(EDGE_PAIRS)
    for edge in EDGE_RANGES:  # every edge range against a few versions
        pairs.extend((gen.pair_version(edge), edge) for _ in range(6))
    while len(pairs) < PAIR_COUNT:
        range_ = gen.rng.choice(range_pool)
        pairs.append((gen.pair_version(range_), range_))
    lists = [
        (
            [gen.pair_version(range_) for _ in range(gen.rng.randint(3, 15))],
            range_,
        )
        for range_ in gen.rng.choices(generated, k=MAX_SATISFYING_LISTS)
    ]
    sorts = [
        [gen.version(pre=0.4, build=0.2) for _ in range(gen.rng.randint(2, 20))]
        for _ in range(SORT_LISTS)
    ]
    compares = [(gen.version(pre=0.5), gen.version(pre=0.5)) for _ in range(COMPARE_PAIRS)]
    return {
        "pairs": pairs,
        "ranges": list(dict.fromkeys(range_pool)),
        "lists": lists,
        "sorts": sorts,
        "compares": compares,
    }


def _unavailable(reason: str) -> NoReturn:
    """Skip, or fail when MODHUB_REQUIRE_SERVICES=1 says node must be there."""
    if os.environ.get("MODHUB_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (MODHUB_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def npm_semver_dir() -> Path:
    """Return the cache folder that holds npm's semver, inside the venv."""
    return Path(sys.prefix) / "npm-semver"


def ensure_npm_semver(npm: str) -> Path:
    """Install semver@7 into the cache folder unless it is already there."""
    cache = npm_semver_dir()
    if (cache / "node_modules" / "semver").is_dir():
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers may race here
        if not (cache / "node_modules" / "semver").is_dir():
            command = [npm, "install", "--prefix", str(cache), *NPM_INSTALL_ARGS]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=600)
            except subprocess.TimeoutExpired:
                _unavailable("`npm install semver@7` timed out after 600 s")
            if done.returncode != 0:
                _unavailable(f"`npm install semver@7` failed: {done.stderr.strip()[-2000:]}")
    return cache


@pytest.fixture(scope="module")
def cases() -> dict[str, Any]:
    return build_cases()


@pytest.fixture(scope="module")
def npm(cases: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run npm's semver on all cases once and return its answers."""
    node, npm_cli = shutil.which("node"), shutil.which("npm")
    if node is None or npm_cli is None:
        _unavailable("node and npm must be on PATH to compare modhub.semver with npm's semver")
    cache = ensure_npm_semver(npm_cli)
    work = tmp_path_factory.mktemp("npm-semver")
    script, inputs, outputs = work / "oracle.js", work / "cases.json", work / "npm.json"
    script.write_text(NODE_SCRIPT, encoding="utf-8")
    inputs.write_text(json.dumps(cases), encoding="utf-8")
    done = subprocess.run(
        [node, str(script), str(cache), str(inputs), str(outputs)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"node failed: {done.stderr}"
    result: dict[str, Any] = json.loads(outputs.read_text(encoding="utf-8"))
    assert str(result["version"]).startswith("7."), f"expected semver@7, got {result['version']}"
    return result


def disagreements(
    inputs: Sequence[Any], expected: Sequence[Any], actual: Callable[[Any], Any]
) -> Iterator[str]:
    """Yield one line per input where modhub's answer differs from npm's."""
    assert len(inputs) == len(expected)
    for args, want in zip(inputs, expected, strict=True):
        got = actual(args)
        if got != want:
            yield f"{args!r}: npm={want!r} modhub={got!r}"


def check(name: str, lines: Iterator[str], total: int) -> None:
    """Fail with the first disagreements, if any."""
    found = list(lines)
    if found:
        shown = "\n  ".join(found[:SHOWN_DISAGREEMENTS])
        pytest.fail(f"{name}: {len(found)} of {total} disagree with npm; first:\n  {shown}")


def test_satisfies_matches_npm(cases: dict[str, Any], npm: dict[str, Any]) -> None:
    pairs = cases["pairs"]
    assert len(pairs) >= PAIR_COUNT
    lines = disagreements(pairs, npm["satisfies"], lambda p: semver.satisfies(p[0], p[1]))
    check("satisfies", lines, len(pairs))


def test_valid_range_matches_npm(cases: dict[str, Any], npm: dict[str, Any]) -> None:
    ranges = cases["ranges"]
    check("valid_range", disagreements(ranges, npm["validRange"], semver.valid_range), len(ranges))


def test_max_satisfying_matches_npm(cases: dict[str, Any], npm: dict[str, Any]) -> None:
    lists = cases["lists"]
    lines = disagreements(lists, npm["maxSatisfying"], lambda c: semver.max_satisfying(c[0], c[1]))
    check("max_satisfying", lines, len(lists))


def test_sort_matches_npm(cases: dict[str, Any], npm: dict[str, Any]) -> None:
    sorts = cases["sorts"]
    check("sort_versions", disagreements(sorts, npm["sort"], semver.sort_versions), len(sorts))


def test_compare_matches_npm(cases: dict[str, Any], npm: dict[str, Any]) -> None:
    compares = cases["compares"]
    lines = disagreements(compares, npm["compare"], lambda p: semver.compare(p[0], p[1]))
    check("compare", lines, len(compares))


def test_cases_exercise_both_outcomes(cases: dict[str, Any], npm: dict[str, Any]) -> None:
    """Guard the generator: a differential test of all-False answers proves little."""
    matched = sum(npm["satisfies"]) / len(npm["satisfies"])
    valid = sum(npm["validRange"]) / len(npm["validRange"])
    found = sum(m is not None for m in npm["maxSatisfying"]) / len(npm["maxSatisfying"])
    prerelease_hits = sum(
        hit and "-" in version.split("+")[0]
        for (version, _), hit in zip(cases["pairs"], npm["satisfies"], strict=True)
    )
    assert 0.2 < matched < 0.8, matched
    assert prerelease_hits >= 50, prerelease_hits
    assert 0.5 < valid < 0.95, valid
    assert found > 0.3, found
