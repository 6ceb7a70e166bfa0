"""Validate a manifest: every shape error and every rule broken, reported at once."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from pydantic_core.core_schema import ErrorType

from modhub.manifest import checks, claims
from modhub.manifest.model import Manifest
from modhub.manifest.result import Findings, Location, ValidationResult

_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "int_from_float": "a whole number",
}
_PYDANTIC_TYPES = frozenset(typing.get_args(ErrorType))
_RANGE_CODES = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def validate_manifest(
    data: object, *, folder: Path | None = None, allow_direct_references: bool = False
) -> ValidationResult:
    """Return every error and warning in a parsed `module.json`.

    With `folder`, also check that every handler and component file exists in it.
    `allow_direct_references` accepts `x @ https://…` and VCS requirements (the operator's
    MODHUB_PIP_ALLOW_DIRECT_REFERENCES); local paths and file: URLs are always refused.
    """
    findings = Findings()
    if not isinstance(data, dict):
        findings.error((), "wrong_type", "the manifest must be a JSON object")
        return findings.result()
    try:
        view = checks.View.of(Manifest.model_validate(data))
    except ValidationError as exc:
        _report(findings, data, exc.errors(include_url=False))
        view = checks.View.salvage(data)
    checks.run(view, findings, folder)
    claims.check_permission_scopes(view, findings)
    claims.check_requirements(view, findings, allow_direct_references=allow_direct_references)
    return findings.result()


def _report(findings: Findings, data: Mapping[str, Any], errors: list[ErrorDetails]) -> None:
    """Turn Pydantic's errors into findings, one per place in the document."""
    by_place: dict[Location, list[tuple[ErrorDetails, bool]]] = {}
    for error in errors:
        location, through_union = _place(data, error)
        by_place.setdefault(location, []).append((error, through_union))
    for location, found in by_place.items():
        if len(found) > 1 and all(union for _, union in found):
            deeper = any(
                p[: len(location)] == location and len(p) > len(location) for p in by_place
            )
            if not deeper:
                findings.error(
                    location,
                    "wrong_type",
                    "does not match any allowed form: "
                    + ", ".join(sorted({_TYPE_NAMES.get(e["type"], e["type"]) for e, _ in found})),
                )
            continue
        for error, _ in found:
            code, message = _explain(error, location)
            findings.error(location, code, message)


def _place(data: Mapping[str, Any], error: ErrorDetails) -> tuple[Location, bool]:
    """Return where an error is in the document, dropping Pydantic's union tags."""
    place: list[str | int] = []
    current: Any = data
    through_union = False
    loc = [p for p in error["loc"] if p != "[key]"]
    for k, part in enumerate(loc):
        last = k == len(loc) - 1
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and part < len(current):
            current = current[part]
        elif last and error["type"] in ("missing", "extra_forbidden"):
            pass
        else:
            through_union = True
            continue
        place.append(part)
    return tuple(place), through_union


def _explain(error: ErrorDetails, location: Location) -> tuple[str, str]:
    """Return the stable code and a readable message of one Pydantic error."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    key = location[-1] if location else "manifest"
    if kind == "missing":
        return "required", f"'{key}' is required"
    if kind == "extra_forbidden":
        return "unknown_field", _unknown_field_message(str(key), location[:-1])
    if kind == "literal_error":
        return "not_allowed", f"must be one of {ctx.get('expected')}, not {error['input']!r}"
    if kind in _TYPE_NAMES:
        return "wrong_type", (
            f"{_name(key)} must be {_TYPE_NAMES[kind]}, not {checks._json_type(error['input'])}"
        )
    if kind in _RANGE_CODES:
        return "out_of_range", f"{_name(key)} " + error["msg"].replace("Input should be", "must be")
    if kind in ("string_too_short", "too_short"):
        return "too_short", error["msg"].replace("Value should", "must").replace(
            "String should", "must"
        )
    if kind in ("string_too_long", "too_long"):
        return "too_long", error["msg"].replace("Value should", "must").replace(
            "String should", "must"
        )
    if kind == "string_pattern_mismatch":
        return "invalid_format", f"{error['input']!r} does not match {ctx.get('pattern')}"
    if kind in _PYDANTIC_TYPES:
        return "invalid_value", error["msg"]
    return kind, error["msg"]  # one of our own codes (model.py's `_error`)


def _name(key: str | int) -> str:
    return f"'{key}'" if isinstance(key, str) else f"item {key}"


def _unknown_field_message(key: str, parent: Location) -> str:
    allowed = _allowed_keys(parent)
    by_lower = {a.lower(): a for a in allowed}
    guess = by_lower.get(key.lower()) or next(
        iter(difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)), None
    )
    hint = (
        f"; did you mean '{guess}'?"
        if guess
        else (f"; allowed: {', '.join(sorted(allowed))}" if allowed else "")
    )
    return f"unknown field '{key}'{hint}"


def _allowed_keys(parent: Location) -> list[str]:
    """Return the keys the model at `parent` accepts, found by walking the models."""
    model: Any = Manifest
    for part in parent:
        model = _step(model, part)
        if model is None:
            return []
    model = _unwrap(model)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or n for n, f in model.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    """Return the model inside Annotated and unions, else the first member."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            models = [a for a in members if isinstance(a, type) and issubclass(a, BaseModel)]
            annotation = (models or members)[0]
        else:
            return annotation


def _step(annotation: Any, part: str | int) -> Any:
    """Return the type one step below `annotation` along `part`."""
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, info in annotation.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
        return None
    if typing.get_origin(annotation) in (list, dict):
        return typing.get_args(annotation)[-1]
    return None
