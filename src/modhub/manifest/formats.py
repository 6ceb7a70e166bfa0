"""Formats of single manifest values: names, paths, handler references, cron.

Each `*_problem` function returns why a value is wrong, or None when it is fine.
"""

from __future__ import annotations

import re
import zoneinfo
from functools import lru_cache
from pathlib import PurePosixPath

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
def requirement_problem(text: str) -> str | None:
    """Return why `text` is not a PEP 508 requirement."""
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        return str(exc).splitlines()[0]
    if requirement.url and requirement.url.startswith("file:"):
        return "local file requirements are not allowed; ship a wheel folder instead"
    return None
