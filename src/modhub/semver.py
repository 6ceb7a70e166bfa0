"""Validate, compare and match semantic versions with npm's semver rules.

This is the only module that may import ``nodesemver``. That package is an old
port of npm's ``semver`` (the 5.x era), and its range parser differs from
npm's ``semver@7`` in ways that change results: upper bounds without ``-0``,
no ``>=0.0.0`` to ``*`` rewrite, no null-set or ``*`` collapsing across ``||``,
no rejection of out-of-order x-ranges such as ``1.x.3``, no build-metadata
stripping, no 256-character / ``MAX_SAFE_INTEGER`` limits, and Unicode digits
accepted by Python's ``\\d``. So the range *syntax* (desugaring of carets,
tildes, x-ranges and hyphens into plain comparators) is ported here from
``semver@7`` (``classes/range.js``, ``internal/re.js``), while ``nodesemver``
parses the resulting plain comparators and versions, compares them, and applies
npm's prerelease rule (``test_set``). ``tests/test_semver_npm.py`` checks the
result against npm's own package.

Known gap: numeric prerelease identifiers above 2**53 - 1 compare exactly here,
while npm compares them as (rounded) JavaScript numbers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeAlias

import nodesemver

__all__ = [
    "compare",
    "max_satisfying",
    "satisfies",
    "sort_versions",
    "valid_range",
    "valid_version",
]

# The official SemVer 2.0.0 regex (https://semver.org, "numbered capture groups").
_SEMVER_RE: Final = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?",
    re.ASCII,
)

# Limits of npm's semver (internal/constants.js).
_MAX_LENGTH: Final = 256
_MAX_SAFE_INTEGER: Final = 2**53 - 1
_MAX_SAFE_BUILD_LENGTH: Final = _MAX_LENGTH - 6

# What JavaScript's \s and String.prototype.trim() treat as whitespace.
_JS_WHITESPACE: Final = (
    "\t\n\v\f\r \u00a0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_JS_WHITESPACE_RUN: Final = re.compile("[" + re.escape(_JS_WHITESPACE) + "]+")
_SPACES: Final = re.compile(" +")

# Regex sources of npm's semver@7 (internal/re.js), strict (non-loose) flavour.
_NUM = r"0|[1-9]\d*"
_NUM_LOOSE = r"\d+"
_NON_NUM = r"\d*[a-zA-Z-][a-zA-Z0-9-]*"
_MAIN = rf"({_NUM})\.({_NUM})\.({_NUM})"
_MAIN_LOOSE = rf"({_NUM_LOOSE})\.({_NUM_LOOSE})\.({_NUM_LOOSE})"
_PRE_ID = rf"(?:{_NON_NUM}|{_NUM})"
_PRE_ID_LOOSE = rf"(?:{_NON_NUM}|{_NUM_LOOSE})"
_PRE = rf"(?:-({_PRE_ID}(?:\.{_PRE_ID})*))"
_PRE_LOOSE = rf"(?:-?({_PRE_ID_LOOSE}(?:\.{_PRE_ID_LOOSE})*))"
_BUILD_ID = r"[a-zA-Z0-9-]+"
_BUILD = rf"(?:\+({_BUILD_ID}(?:\.{_BUILD_ID})*))"
_FULL_PLAIN = rf"v?{_MAIN}{_PRE}?{_BUILD}?"
_LOOSE_PLAIN = rf"[v=\s]*{_MAIN_LOOSE}{_PRE_LOOSE}?{_BUILD}?"
_GTLT = r"((?:<|>)?=?)"
_XID = rf"{_NUM}|x|X|\*"
_XRANGE_PLAIN = rf"[v=\s]*({_XID})(?:\.({_XID})(?:\.({_XID})(?:{_PRE})?{_BUILD}?)?)?"


def _npm_regex(source: str) -> re.Pattern[str]:
    """Compile a source the way npm's safeRe does, for whitespace-collapsed ASCII input."""
    # npm bounds the greedy tokens (makeSafeRegex); ranges are whitespace-collapsed
    # to single spaces first, so \s only ever has to match " ".
    for token, limit in (
        ("\\s", 1),
        ("\\d", _MAX_LENGTH),
        ("[a-zA-Z0-9-]", _MAX_SAFE_BUILD_LENGTH),
    ):
        source = source.replace(token + "*", f"{token}{{0,{limit}}}")
        source = source.replace(token + "+", f"{token}{{1,{limit}}}")
    return re.compile(source.replace("\\s", " "), re.ASCII)


# Anchored patterns (npm's ^...$) are used with fullmatch().
_FULL: Final = _npm_regex(_FULL_PLAIN)
_XRANGE: Final = _npm_regex(rf"{_GTLT}\s*{_XRANGE_PLAIN}")
_TILDE: Final = _npm_regex(rf"(?:~>?){_XRANGE_PLAIN}")
_CARET: Final = _npm_regex(rf"(?:\^){_XRANGE_PLAIN}")
_COMPARATOR: Final = _npm_regex(rf"{_GTLT}\s*({_FULL_PLAIN})")
_HYPHEN_RANGE: Final = _npm_regex(rf"\s*({_XRANGE_PLAIN})\s+-\s+({_XRANGE_PLAIN})\s*")
_GTE0: Final = _npm_regex(r"\s*>=\s*0\.0\.0\s*")
# Unanchored patterns.
_TILDE_TRIM: Final = _npm_regex(r"(\s*)(?:~>?)\s+")
_CARET_TRIM: Final = _npm_regex(r"(\s*)(?:\^)\s+")
_COMPARATOR_TRIM: Final = _npm_regex(rf"(\s*){_GTLT}\s*({_LOOSE_PLAIN}|{_XRANGE_PLAIN})")
_STAR: Final = _npm_regex(r"(<|>)?=?\s*\*")
_BUILD_ANYWHERE: Final = _npm_regex(_BUILD)
# npm strips build metadata from ranges with the unbounded source regex.
_BUILD_STRIP: Final = re.compile(_BUILD, re.ASCII)

_NULL_SET: Final = "<0.0.0-0"
_ANY: Final = ""

# A parsed range: sets joined by ||, each a tuple of nodesemver Comparators.
_CompiledRange: TypeAlias = tuple[tuple[Any, ...], ...]


class _InvalidRangeError(ValueError):
    """Raised inside range compilation when npm would throw."""


def valid_version(version: str) -> bool:
    """Return whether ``version`` is strict SemVer 2.0.0 within npm's size limits."""
    # Beyond the official regex, reject what npm cannot represent (over 256
    # characters, or a number above 2**53 - 1) so every valid version also
    # works with satisfies() and friends.
    if len(version) > _MAX_LENGTH:
        return False
    match = _SEMVER_RE.fullmatch(version)
    return match is not None and all(int(n) <= _MAX_SAFE_INTEGER for n in match.group(1, 2, 3))


def valid_range(range_: str) -> bool:
    """Return whether ``range_`` is a valid npm range (non-loose); "" means "*"."""
    return _compile_range(range_) is not None


def satisfies(version: str, range_: str) -> bool:
    """Return whether ``version`` satisfies ``range_`` as npm's semver.satisfies does."""
    # Like npm this accepts "v1.2.3" and surrounding whitespace in ``version``;
    # check valid_version() first where only strict SemVer is acceptable.
    compiled = _compile_range(range_)
    if compiled is None:
        return False
    parsed = _parse_npm_version(version)
    return parsed is not None and _test(compiled, parsed)


def max_satisfying(versions: Iterable[str], range_: str) -> str | None:
    """Return the highest of ``versions`` that satisfies ``range_``, or None."""
    compiled = _compile_range(range_)
    if compiled is None:
        return None
    best: str | None = None
    best_parsed: Any = None
    for version in versions:
        parsed = _parse_npm_version(version)
        if parsed is None or not _test(compiled, parsed):
            continue
        if best is None or int(best_parsed.compare(parsed)) < 0:
            best, best_parsed = version, parsed
    return best


def compare(a: str, b: str) -> int:
    """Return -1, 0 or 1 as ``a`` has lower, equal or higher SemVer precedence than ``b``."""
    return int(_parse_strict(a).compare(_parse_strict(b)))


def sort_versions(versions: Iterable[str]) -> list[str]:
    """Return ``versions`` sorted ascending by SemVer precedence, ties broken by build."""
    parsed = [(_parse_strict(v), v) for v in versions]
    key: Callable[[tuple[Any, str]], Any] = functools.cmp_to_key(_compare_build)
    return [v for _, v in sorted(parsed, key=key)]


def _compare_build(a: tuple[Any, str], b: tuple[Any, str]) -> int:
    """Compare two parsed versions like npm's compareBuild (precedence, then build)."""
    result = int(a[0].compare(b[0]))
    if result:
        return result
    build_a: list[str] = a[0].build
    build_b: list[str] = b[0].build
    for ident_a, ident_b in zip(build_a, build_b, strict=False):
        if ident_a != ident_b:
            return int(nodesemver.compare_identifiers(ident_a, ident_b))
    return (len(build_a) > len(build_b)) - (len(build_a) < len(build_b))


def _parse_strict(version: str) -> Any:
    """Parse a version accepted by valid_version, else raise ValueError."""
    if not valid_version(version):
        raise ValueError(f"invalid semantic version: {version!r}")
    return _parse_npm_version(version)


def _test(compiled: _CompiledRange, version: Any) -> bool:
    """Return whether a parsed version satisfies any comparator set of a compiled range."""
    return any(bool(nodesemver.test_set(comparators, version)) for comparators in compiled)


def _js_trim(text: str) -> str:
    """Strip whitespace from both ends the way JavaScript's trim() does."""
    return text.strip(_JS_WHITESPACE)


@functools.lru_cache(maxsize=8192)
def _parse_npm_version(version: str) -> Any:
    """Parse a version like ``new SemVer(version)`` in npm; return None where npm throws."""
    if len(version) > _MAX_LENGTH:
        return None
    trimmed = _js_trim(version)
    match = _FULL.fullmatch(trimmed)
    if match is None or any(int(n) > _MAX_SAFE_INTEGER for n in match.group(1, 2, 3)):
        return None
    return nodesemver.make_semver(trimmed, False)


@functools.lru_cache(maxsize=8192)
def _compile_range(range_: str) -> _CompiledRange | None:
    """Parse a range like ``new Range(range)`` in npm; return None where npm throws."""
    raw = _JS_WHITESPACE_RUN.sub(" ", _js_trim(range_))
    try:
        sets = [_parse_comparator_set(_js_trim(part)) for part in raw.split("||")]
    except _InvalidRangeError:
        return None
    if len(sets) > 1:
        # Drop null sets unless all are; a lone "*" set makes the whole range "*".
        non_null = [s for s in sets if s[0][0] != _NULL_SET]
        sets = non_null or sets[:1]
        if len(sets) > 1:
            sets = next(([s] for s in sets if len(s) == 1 and s[0][0] == _ANY), sets)
    return tuple(tuple(comparator for _, comparator in s) for s in sets)


def _parse_comparator_set(part: str) -> list[tuple[str, Any]]:
    """Desugar one ``||`` alternative into (value, comparator) pairs, as npm's parseRange."""
    part = _BUILD_STRIP.sub("", part)
    hyphen = _HYPHEN_RANGE.fullmatch(part)
    if hyphen is not None:
        part = _replace_hyphen(hyphen)
    part = _COMPARATOR_TRIM.sub(r"\1\2\3", part)
    part = _TILDE_TRIM.sub(r"\1~", part)
    part = _CARET_TRIM.sub(r"\1^", part)
    desugared = " ".join(_desugar(token) for token in part.split(" "))
    tokens = [_replace_gte0(token) for token in _SPACES.split(desugared)]
    comparators = [_make_comparator(token) for token in tokens]
    unique: dict[str, Any] = {}
    for value, comparator in comparators:
        if value == _NULL_SET:
            return [(value, comparator)]
        unique[value] = comparator
    if len(unique) > 1:
        unique.pop(_ANY, None)
    return list(unique.items())


def _make_comparator(token: str) -> tuple[str, Any]:
    """Build a nodesemver comparator for a plain comparator token; raise if npm would."""
    if token == "":
        return _ANY, nodesemver.make_comparator("", False)
    match = _COMPARATOR.fullmatch(token)
    if match is None:
        raise _InvalidRangeError(token)
    operator = "" if match.group(1) == "=" else match.group(1)
    version = _parse_npm_version(match.group(2))
    if version is None:
        raise _InvalidRangeError(token)
    value = operator + str(version.version)
    return value, nodesemver.make_comparator(value, False)


def _desugar(token: str) -> str:
    """Turn one caret, tilde, x-range or star token into plain comparators."""
    token = _BUILD_ANYWHERE.sub("", token, count=1)
    token = " ".join(_replace_caret(c) for c in _SPACES.split(token.strip(" ")))
    token = " ".join(_replace_tilde(c) for c in _SPACES.split(token.strip(" ")))
    token = " ".join(_replace_xrange(c) for c in _SPACES.split(token))
    return _STAR.sub("", token.strip(" "), count=1)


def _is_x(part: str | None) -> bool:
    """Return whether a version part is a wildcard (missing, x, X or *)."""
    return not part or part.lower() == "x" or part == "*"


def _replace_caret(comp: str) -> str:
    """Desugar ``^M.m.p-pre``: allow changes that keep the left-most non-zero part."""
    match = _CARET.fullmatch(comp)
    if match is None:
        return comp
    major, minor, patch, pre = match.group(1, 2, 3, 4)
    if _is_x(major):
        return ""
    if _is_x(minor):
        return f">={major}.0.0 <{int(major) + 1}.0.0-0"
    if _is_x(patch):
        if major == "0":
            return f">={major}.{minor}.0 <{major}.{int(minor) + 1}.0-0"
        return f">={major}.{minor}.0 <{int(major) + 1}.0.0-0"
    low = f">={major}.{minor}.{patch}" + (f"-{pre}" if pre else "")
    if major == "0":
        if minor == "0":
            return f"{low} <{major}.{minor}.{int(patch) + 1}-0"
        return f"{low} <{major}.{int(minor) + 1}.0-0"
    return f"{low} <{int(major) + 1}.0.0-0"


def _replace_tilde(comp: str) -> str:
    """Desugar ``~M.m.p-pre``: allow patch-level changes (minor-level if no minor)."""
    match = _TILDE.fullmatch(comp)
    if match is None:
        return comp
    major, minor, patch, pre = match.group(1, 2, 3, 4)
    if _is_x(major):
        return ""
    if _is_x(minor):
        return f">={major}.0.0 <{int(major) + 1}.0.0-0"
    if _is_x(patch):
        return f">={major}.{minor}.0 <{major}.{int(minor) + 1}.0-0"
    low = f">={major}.{minor}.{patch}" + (f"-{pre}" if pre else "")
    return f"{low} <{major}.{int(minor) + 1}.0-0"


def _replace_xrange(comp: str) -> str:
    """Desugar an x-range such as ``1.x``, ``>=1.2`` or ``<=2.*`` into comparators."""
    comp = comp.strip(" ")
    match = _XRANGE.fullmatch(comp)
    if match is None:
        return comp
    gtlt, major, minor, patch = match.group(1, 2, 3, 4)
    if (_is_x(major) and not _is_x(minor)) or (_is_x(minor) and patch and not _is_x(patch)):
        return comp  # e.g. "1.x.3": left as is, so it fails as a comparator
    any_major = _is_x(major)
    any_minor = any_major or _is_x(minor)
    any_patch = any_minor or _is_x(patch)
    if gtlt == "=" and any_patch:
        gtlt = ""
    if any_major:
        return _NULL_SET if gtlt in (">", "<") else "*"
    if gtlt and any_patch:
        new_major, new_minor = int(major), 0 if any_minor else int(minor)
        if gtlt == ">":  # >1 => >=2.0.0, >1.2 => >=1.3.0
            gtlt = ">="
            if any_minor:
                new_major += 1
            else:
                new_minor += 1
        elif gtlt == "<=":  # <=1 => <2.0.0-0, <=1.2 => <1.3.0-0
            gtlt = "<"
            if any_minor:
                new_major += 1
            else:
                new_minor += 1
        return f"{gtlt}{new_major}.{new_minor}.0" + ("-0" if gtlt == "<" else "")
    if any_minor:
        return f">={major}.0.0 <{int(major) + 1}.0.0-0"
    if any_patch:
        return f">={major}.{minor}.0 <{major}.{int(minor) + 1}.0-0"
    return comp


def _replace_hyphen(match: re.Match[str]) -> str:
    """Desugar ``A - B`` into ``>=A <=B``, widening partial versions like npm."""
    low, low_major, low_minor, low_patch = match.group(1, 2, 3, 4)
    high, high_major, high_minor, high_patch, high_pre = match.group(7, 8, 9, 10, 11)
    if _is_x(low_major):
        low = ""
    elif _is_x(low_minor):
        low = f">={low_major}.0.0"
    elif _is_x(low_patch):
        low = f">={low_major}.{low_minor}.0"
    else:
        low = f">={low}"
    if _is_x(high_major):
        high = ""
    elif _is_x(high_minor):
        high = f"<{int(high_major) + 1}.0.0-0"
    elif _is_x(high_patch):
        high = f"<{high_major}.{int(high_minor) + 1}.0-0"
    elif high_pre:
        high = f"<={high_major}.{high_minor}.{high_patch}-{high_pre}"
    else:
        high = f"<={high}"
    return f"{low} {high}".strip(" ")


def _replace_gte0(comp: str) -> str:
    """Turn ``>=0.0.0`` into the any-version comparator, as npm does."""
    comp = comp.strip(" ")
    return "" if _GTE0.fullmatch(comp) else comp
