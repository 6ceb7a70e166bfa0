"""Unit tests of modhub.semver on the cases npm's semver documents."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modhub import semver
from modhub.semver import (
    compare,
    max_satisfying,
    satisfies,
    sort_versions,
    valid_range,
    valid_version,
)


@pytest.mark.parametrize(
    "version",
    [
        "0.0.0",
        "1.0.0",
        "10.20.30",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-0.3.7",
        "1.0.0-x.7.z.92",
        "1.0.0-x-y-z.--",
        "1.0.0-alpha+001",
        "1.0.0+20130313144700",
        "1.0.0-beta+exp.sha.5114f85",
        "1.0.0+21AF26D3----117B344092BD",
        "1.0.0-0A.is.legal",
        "9007199254740991.0.0",
    ],
)
def test_valid_version_accepts_semver(version: str) -> None:
    assert valid_version(version)


@pytest.mark.parametrize(
    "version",
    [
        "v1.0.0",
        "=1.0.0",
        "01.0.0",
        "1.01.0",
        "1.0.01",
        "1.0",
        "1",
        "1.0.0.0",
        "1.0.0-01",
        "1.0.0-",
        "1.0.0+",
        "1.0.0-alpha..1",
        "1.0.0-alpha_beta",
        "1.0.0+build+more",
        " 1.0.0",
        "1.0.0 ",
        "1.0.0\n",
        "",
        "a.b.c",
        "1.2.٣",
        "１.0.0",
        "1.0.0-α",
        "9007199254740992.0.0",  # above Number.MAX_SAFE_INTEGER: npm can't use it
        "1.0.0-" + "a" * 251,  # longer than npm's 256 characters
    ],
)
def test_valid_version_rejects_others(version: str) -> None:
    assert not valid_version(version)


SATISFIES_CASES = [
    # caret: changes that keep the left-most non-zero part
    ("1.2.3", "^1.2.3", True),
    ("1.9.9", "^1.2.3", True),
    ("1.2.2", "^1.2.3", False),
    ("2.0.0", "^1.2.3", False),
    ("2.0.0-alpha", "^1.2.3", False),
    ("0.2.3", "^0.2.3", True),
    ("0.2.9", "^0.2.3", True),
    ("0.3.0", "^0.2.3", False),
    ("0.0.3", "^0.0.3", True),
    ("0.0.4", "^0.0.3", False),
    ("0.0.2", "^0.0.3", False),
    ("0.2.0", "^0.2", True),
    ("0.2.9", "^0.2", True),
    ("0.3.0", "^0.2", False),
    ("0.1.9", "^0.2", False),
    ("0.0.9", "^0.0", True),
    ("0.1.0", "^0.0", False),
    ("0.0.9", "^0.0.x", True),
    ("0.1.0", "^0.0.x", False),
    ("0.9.9", "^0.x", True),
    ("1.0.0", "^0.x", False),
    ("1.9.0", "^1.2.x", True),
    ("2.0.0", "^1.2.x", False),
    ("1.0.0", "^1.x", True),
    ("1.2.3", "^ 1.2.3", True),
    # caret and tilde with prereleases: only on the same [major, minor, patch]
    ("1.2.3-beta", "^1.2.3-alpha", True),
    ("1.2.3-alpha", "^1.2.3-alpha", True),
    ("1.2.3-0", "^1.2.3-alpha", False),
    ("1.3.0-beta", "^1.2.3-alpha", False),
    ("1.3.0", "^1.2.3-alpha", True),
    ("1.2.3-beta.4", "^1.2.3-beta.2", True),
    ("1.2.4-beta.2", "^1.2.3-beta.2", False),
    ("1.2.3-beta.1", "^1.2.3-beta.2", False),
    ("0.0.3-pr.2", "^0.0.3-beta", True),
    ("0.0.4", "^0.0.3-beta", False),
    ("1.2.3-beta.4", "~1.2.3-beta.2", True),
    ("1.2.4-beta.2", "~1.2.3-beta.2", False),
    # tilde: patch-level changes if a minor is given, else minor-level
    ("1.2.3", "~1.2.3", True),
    ("1.2.9", "~1.2.3", True),
    ("1.3.0", "~1.2.3", False),
    ("1.2.0", "~1.2", True),
    ("1.3.0", "~1.2", False),
    ("1.9.9", "~1", True),
    ("2.0.0", "~1", False),
    ("0.2.5", "~0.2.3", True),
    ("0.3.0", "~0.2.3", False),
    ("0.9.0", "~0", True),
    ("1.2.5", "~>1.2", True),
    ("1.2.5", "~ 1.2.3", True),
    # x-ranges
    ("1.0.0", "*", True),
    ("0.0.0", "*", True),
    ("1.0.0-alpha", "*", False),
    ("1.0.0", "", True),
    ("1.0.0", "x", True),
    ("3.1.4", "X.X.X", True),
    ("1.0.0", "1.x", True),
    ("1.9.9", "1.x", True),
    ("2.0.0", "1.x", False),
    ("0.9.9", "1.x", False),
    ("1.2.0", "1.2.*", True),
    ("1.2.9", "1.2.*", True),
    ("1.3.0", "1.2.*", False),
    ("1.5.0", "1", True),
    ("1.2.7", "1.2", True),
    ("1.3.0", "1.2", False),
    ("1.3.0", ">1.2", True),
    ("1.2.9", ">1.2", False),
    ("1.2.9", "<=1.2", True),
    ("1.3.0", "<=1.2", False),
    ("1.9.9", "<2", True),
    ("2.0.0", "<2", False),
    # hyphen ranges
    ("1.2.3", "1.2.3 - 2.3.4", True),
    ("2.3.4", "1.2.3 - 2.3.4", True),
    ("2.3.5", "1.2.3 - 2.3.4", False),
    ("1.2.2", "1.2.3 - 2.3.4", False),
    ("1.2.0", "1.2 - 2.3.4", True),
    ("1.1.9", "1.2 - 2.3.4", False),
    ("2.3.9", "1.2.3 - 2.3", True),
    ("2.4.0", "1.2.3 - 2.3", False),
    ("2.9.9", "1.2.3 - 2", True),
    ("3.0.0", "1.2.3 - 2", False),
    ("2.3.4-rc.1", "1.2.3 - 2.3.4-rc.2", True),
    ("2.3.4", "1.2.3 - 2.3.4-rc.2", False),
    # || and plain comparators, with and without spaces
    ("1.2.7", "1.2.7 || >=1.2.9 <2.0.0", True),
    ("1.2.9", "1.2.7 || >=1.2.9 <2.0.0", True),
    ("1.4.6", "1.2.7 || >=1.2.9 <2.0.0", True),
    ("1.2.8", "1.2.7 || >=1.2.9 <2.0.0", False),
    ("2.0.0", "1.2.7 || >=1.2.9 <2.0.0", False),
    ("2.0.0", "1.2.7||>=1.2.9 <2.0.0||2.x", True),
    ("1.2.3", ">= 1.2.3", True),
    ("1.2.2", ">= 1.2.3", False),
    ("1.2.4", "> 1.2.3 < 1.2.5", True),
    ("1.2.5", "> 1.2.3 < 1.2.5", False),
    ("1.2.3", ">=1.2.3 <1.2.5", True),
    ("1.2.3", "=1.2.3", True),
    ("1.2.3", "= 1.2.3", True),
    ("1.2.3", "1.2.3", True),
    ("1.2.4", "1.2.3", False),
    ("1.2.3", "v1.2.3", True),
    ("1.2.3", "\t>=1.0.0\n <2.0.0  ", True),
    # the prerelease rule: a prerelease only satisfies a comparator set that
    # names a prerelease on the same [major, minor, patch]
    ("2.0.0-alpha", "<2.0.0", False),
    ("2.0.0-alpha", "<2.0.0-beta", True),
    ("1.2.3-alpha.7", ">1.2.3-alpha.3", True),
    ("3.4.5-alpha.9", ">1.2.3-alpha.3", False),
    ("3.4.5", ">1.2.3-alpha.3", True),
    ("1.2.3-beta", ">=1.2.3-alpha <1.2.3", True),
    ("1.2.3-beta", "1.2.3-beta", True),
    ("1.2.3-beta", "* || 1.2.3-beta", False),  # npm collapses a range with a "*" set to "*"
    ("2.0.0-beta", "^1.2.3 >=2.0.0-alpha", False),  # ^1.2.3 ends at <2.0.0-0
    # build metadata is ignored
    ("1.2.3+build.5", "1.2.3", True),
    ("1.2.3", "1.2.3+build.5", True),
    ("1.2.3", ">=1.0.0 +build", True),
    # npm's lenient version forms
    ("v1.2.3", "^1", True),
    (" 1.2.3 ", "^1", True),
    # invalid version or range: False, as in npm
    ("1.2.3", "not a range", False),
    ("1.2.3", ">=>1.2.3", False),
    ("1.2.3", "1.x.3", False),
    ("nope", "*", False),
    ("", "*", False),
    ("1.2", "*", False),
    ("01.2.3", "*", False),
    ("1.2.٣", "*", False),
    ("9007199254740992.0.0", "*", False),
]


@pytest.mark.parametrize(("version", "range_", "expected"), SATISFIES_CASES)
def test_satisfies(version: str, range_: str, expected: bool) -> None:
    assert satisfies(version, range_) is expected


@pytest.mark.parametrize(
    "range_",
    [
        "",
        "*",
        "x",
        "^1.2.3",
        "~1.2",
        "~>1.2",
        "1.x",
        "1.2.*",
        "1.2.3 - 2.3.4",
        ">= 1.2.3",
        "1.2.7 || >=1.2.9 <2.0.0",
        ">=1.0.0-beta.1",
        "^0.0.3",
        "v1.2.3",
        "1.2.3+build",
        "||",
    ],
)
def test_valid_range_accepts(range_: str) -> None:
    assert valid_range(range_)


@pytest.mark.parametrize(
    "range_",
    [
        "abc",
        ">=>1",
        "<>1.0.0",
        "^^1",
        "1.x.3",
        "x.1",
        "^1.2.3.4",
        ">=01.0.0",
        "1.2.3 - ",
        "1.2.3 - 2.3.4 - 3",
        "~1.2.3beta",
        "1.0.0 || foo",
        "^9007199254740991",
    ],
)
def test_valid_range_rejects(range_: str) -> None:
    assert not valid_range(range_)


VERSIONS = ["1.2.3", "1.2.4", "1.3.0", "2.0.0-rc.1", "2.0.0", "0.9.0"]


@pytest.mark.parametrize(
    ("versions", "range_", "expected"),
    [
        (VERSIONS, "^1.2", "1.3.0"),
        (VERSIONS, "~1.2", "1.2.4"),
        (VERSIONS, "*", "2.0.0"),
        (VERSIONS, "<2", "1.3.0"),
        (VERSIONS, "^0.9", "0.9.0"),
        (VERSIONS, ">2", None),
        (VERSIONS, "not a range", None),
        ([], "*", None),
        (["2.0.0-rc.1", "2.0.0-beta"], ">=2.0.0-alpha", "2.0.0-rc.1"),
        (["2.0.0-rc.1", "1.0.0"], "*", "1.0.0"),
        (["nope", "1.0.0", "v1.0.1"], "*", "v1.0.1"),
        (["1.0.0+a", "1.0.0+b"], "1.x", "1.0.0+a"),
    ],
)
def test_max_satisfying(versions: list[str], range_: str, expected: str | None) -> None:
    assert max_satisfying(versions, range_) == expected


def test_max_satisfying_takes_any_iterable() -> None:
    assert max_satisfying((v for v in VERSIONS), "1.2.x") == "1.2.4"


def test_sort_versions_follows_semver_precedence() -> None:
    # The precedence example of semver.org, item 11, plus numeric ordering.
    ordered = [
        "0.9.0",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.9.0",
        "1.10.0",
        "2.0.0",
        "2.1.0",
        "2.1.1",
        "10.0.0",
    ]
    shuffled = ordered[::2][::-1] + ordered[1::2]
    assert sorted(shuffled) != ordered
    assert sort_versions(shuffled) == ordered
    assert sort_versions(iter(shuffled)) == ordered


def test_sort_versions_breaks_ties_by_build_like_npm() -> None:
    assert sort_versions(["1.0.0+b", "1.0.0+a", "1.0.0", "1.0.0+a.1"]) == [
        "1.0.0",
        "1.0.0+a",
        "1.0.0+a.1",
        "1.0.0+b",
    ]


def test_sort_versions_rejects_invalid_versions() -> None:
    with pytest.raises(ValueError, match=r"v1\.0\.0"):
        sort_versions(["1.0.0", "v1.0.0"])


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.0.0", "2.0.0", -1),
        ("2.0.0", "1.0.0", 1),
        ("1.2.3", "1.2.3", 0),
        ("1.10.0", "1.9.0", 1),
        ("1.0.0-alpha", "1.0.0", -1),
        ("1.0.0-alpha.1", "1.0.0-alpha", 1),
        ("1.0.0-alpha.1", "1.0.0-alpha.beta", -1),
        ("1.0.0-beta.11", "1.0.0-beta.2", 1),
        ("1.0.0+build.1", "1.0.0+build.2", 0),
    ],
)
def test_compare(a: str, b: str, expected: int) -> None:
    assert compare(a, b) == expected


@pytest.mark.parametrize(("a", "b"), [("v1.0.0", "1.0.0"), ("1.0.0", "1.0"), ("", "1.0.0")])
def test_compare_rejects_invalid_versions(a: str, b: str) -> None:
    with pytest.raises(ValueError, match="invalid semantic version"):
        compare(a, b)


def test_ranges_are_parsed_once() -> None:
    range_ = ">=4.5.6 <4.7.0 || ^4.9.1-rc.3"
    assert valid_range(range_)
    before = semver._compile_range.cache_info()
    for _ in range(100):
        assert satisfies("4.6.0", range_)
        assert valid_range(range_)
    after = semver._compile_range.cache_info()
    assert after.misses == before.misses
    assert after.hits == before.hits + 200


def test_only_the_semver_module_imports_nodesemver() -> None:
    package = Path(semver.__file__).parent
    importers = [
        path.relative_to(package).as_posix()
        for path in sorted(package.rglob("*.py"))
        if re.search(r"^\s*(?:import|from)\s+nodesemver\b", path.read_text("utf-8"), re.M)
    ]
    assert importers == ["semver.py"]
