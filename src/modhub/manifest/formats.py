"""Formats of single manifest values: names, paths, handler references, cron.

Each `*_problem` function returns why a value is wrong, or None when it is fine.
"""

from __future__ import annotations

import re
import zoneinfo
from functools import lru_cache
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from croniter import croniter
from packaging.requirements import InvalidRequirement, Requirement

MODULE_NAME = re.compile(r"[a-z](?:[a-z0-9]|-(?=[a-z0-9])){1,63}")
SEMVER_PATTERN = (
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
PERMISSION = re.compile(r"[a-z][a-z0-9_-]*:[a-z*][a-z0-9_*-]*")
PAGE_PATH = re.compile(r"/(?:[A-Za-z0-9._~-]+(?:/[A-Za-z0-9._~-]+)*)?")
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CONFIG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
CRON_MACROS = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
DEFAULT_FUNCTION = "handler"

_LITERAL_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=@-]+")
_PARAM_SEGMENT = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def split_handler(ref: str) -> tuple[str, str]:
    """Split `file.py:function` into its file and function (default `handler`)."""
    file, sep, function = ref.rpartition(":")
    if sep and _IDENTIFIER.fullmatch(function):
        return file, function
    return ref, DEFAULT_FUNCTION


def file_ref_problem(ref: str, *, allow_function: bool) -> str | None:
    """Return why `ref` is not a relative file path inside the module folder."""
    file = split_handler(ref)[0] if allow_function else ref
    if not file.strip():
        return "the path is empty"
    if "\\" in file:
        return "use forward slashes"
    if file.startswith("/") or re.match(r"[A-Za-z]:", file):
        return "the path must be relative to the module folder, not absolute"
    parts = PurePosixPath(file).parts
    if ".." in parts:
        return "the path leaves the module folder ('..')"
    if file.rsplit("/", 1)[-1] in (".", ""):  # "dir/", "." and "dir/." name folders
        return "the path names a folder, not a file"
    if allow_function and ":" in file:
        return "the function after ':' must be a Python identifier"
    return None


def route_path_problem(path: str) -> str | None:
    """Return why `path` is not a route path such as /vms/:id or /vms/{id}."""
    if not path.startswith("/"):
        return "it must start with '/'"
    if path == "/":
        return None
    seen: set[str] = set()
    for segment in path[1:].split("/"):
        if not segment:
            return "it has an empty segment ('//' or a trailing '/')"
        param = _PARAM_SEGMENT.fullmatch(segment)
        if param:
            name = param.group(1) or param.group(2)
            if name in seen:
                return f"the parameter '{name}' appears twice"
            seen.add(name)
        elif not _LITERAL_SEGMENT.fullmatch(segment) or ":" in segment or "{" in segment:
            return f"the segment '{segment}' is neither a literal nor a :param or {{param}}"
    return None


def normalise_route_path(path: str) -> str:
    """Return `path` with every `:param` written as `{param}`."""
    return re.sub(r"(?<=/):([A-Za-z_][A-Za-z0-9_]*)", r"{\1}", path)


def route_shape(path: str) -> str:
    """Return the shape of a normalised path, with every parameter as `{}`."""
    return re.sub(r"\{[^/]*\}", "{}", path)


@lru_cache(maxsize=1024)
def cron_problem(expr: str) -> str | None:
    """Return why `expr` is not a 5-field cron expression or an @macro."""
    text = expr.strip()
    if text.startswith("@"):
        if text in CRON_MACROS:
            return None
        return f"unknown macro; use one of {', '.join(sorted(CRON_MACROS))}"
    fields = text.split()
    if len(fields) != 5:
        return f"expected 5 fields (minute hour day month weekday), found {len(fields)}"
    if not croniter.is_valid(text):
        return "a field is out of range or malformed"
    return None


@lru_cache(maxsize=256)
def valid_timezone(name: str) -> bool:
    """Return whether `name` is a known IANA time zone."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


@lru_cache(maxsize=1024)
def requirement_syntax_problem(text: str) -> str | None:
    """Return why `text` is not a PEP 508 requirement (its syntax only)."""
    try:
        Requirement(text)
    except InvalidRequirement as exc:
        return str(exc).splitlines()[0]
    return None


def requirement_problem(text: str, *, allow_direct_references: bool = False) -> str | None:
    """Return why modhub must not install requirement `text`, or None when it may.

    Local paths and `file:` URLs are refused in every spelling, always; direct URL and
    VCS references (`x @ https://…`, `x @ git+https://…`) unless `allow_direct_references`
    (the operator's `MODHUB_PIP_ALLOW_DIRECT_REFERENCES`).
    """
    issue = requirement_issue(text, allow_direct_references=allow_direct_references)
    return None if issue is None else issue[1]


@lru_cache(maxsize=1024)
def requirement_issue(
    text: str, *, allow_direct_references: bool = False
) -> tuple[str, str] | None:
    """Return (code, reason) when modhub must not install requirement `text`, else None.

    Codes: `invalid_requirement` (not PEP 508), `local_requirement` (a path or a `file:`
    URL), `unsupported_url` (not an http, https, ssh or git URL with a host) and
    `direct_reference` (a URL, refused unless `allow_direct_references`).
    """
    syntax = requirement_syntax_problem(text)
    if syntax is not None:
        return "invalid_requirement", syntax
    if "${" in text:  # requirements files expand ${VAR}: what uv reads must be what we checked
        return "invalid_requirement", "environment variables (${...}) are not allowed"
    requirement = Requirement(text)
    if requirement.url is None:
        if requirement.name.lower().endswith(ARCHIVE_SUFFIXES):
            # uv and pip read a bare `x.tar.gz` or `x.whl` as a file on the server's disk
            return "local_requirement", LOCAL_REASON
        return None
    return _reference_issue(requirement.url, allow_direct_references)


ARCHIVE_SUFFIXES = (
    ".whl", ".zip", ".tar", ".tgz", ".tbz", ".tbz2", ".txz", ".tlz", ".tar.gz", ".tar.bz2",
    ".tar.xz", ".tar.lz", ".tar.lzma", ".tar.zst", ".egg",
)  # fmt: skip
LOCAL_REASON = (
    "local paths and file: URLs are not allowed; publish the package to the package "
    "index (or a MODHUB_PIP_FIND_LINKS folder) and require it by name"
)
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_VCS = frozenset({"git", "hg", "svn", "bzr"})
_NETWORK = frozenset({"http", "https"})
_VCS_TRANSPORTS = frozenset({"http", "https", "ssh", "git", "svn"})


def _reference_issue(url: str, allow: bool) -> tuple[str, str] | None:
    """Return why the URL of `name @ url` is refused, read the way pip and uv could read it."""
    decoded = url
    for _ in range(5):  # %2566ile: decodes to %66ile: and then to file:
        decoded, before = unquote(decoded), decoded
        if decoded == before:
            break
    decoded = decoded.lstrip("".join(map(chr, range(33))))
    scheme_match = _URL_SCHEME.match(decoded)
    scheme = scheme_match.group(1).lower() if scheme_match else ""
    parts = scheme.split("+")
    if not scheme or len(scheme) == 1 or "file" in parts:  # a path, C:\…, file:, git+file:
        return "local_requirement", LOCAL_REASON
    if "\\" in url or any(ord(c) < 33 or ord(c) == 127 for c in url):
        return "unsupported_url", "the URL has a backslash, a space or a control character"
    if len(parts) == 1:
        known = scheme in _NETWORK
    else:
        known = len(parts) == 2 and parts[0] in _VCS and parts[1] in _VCS_TRANSPORTS
    if not known:
        return (
            "unsupported_url",
            f"'{scheme}:' URLs are not supported; use https:// or git+https://",
        )
    if not urlsplit(decoded[len(scheme) + 1 :]).netloc:
        return "local_requirement", LOCAL_REASON  # https:///x, https:/x: no host, the disk
    if not allow:
        return (
            "direct_reference",
            "direct URL and VCS references are not allowed on this server "
            "(MODHUB_PIP_ALLOW_DIRECT_REFERENCES); require the package by name",
        )
    return None
