"""`docs/manifest.md` documents every manifest field and every code the validator emits."""

from __future__ import annotations

import ast
import json
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import modhub.manifest
from modhub.manifest import Manifest, validate_manifest

DOC = Path(__file__).resolve().parents[2] / "docs" / "manifest.md"
SOURCE = Path(modhub.manifest.__file__).parent
ROOT_OBJECT = "module.json"  # the heading token of the top-level field table

# Where a code is not a literal the scan can follow: Pydantic's own error type,
# passed through by validate._explain for errors it does not map.
PASSTHROUGH = {("validate.py", "_explain", "kind")}
# Codes the scan must find, so that a scan that finds nothing cannot pass.
KNOWN = {
    "invalid_json",
    "required",
    "wrong_type",
    "unknown_field",
    "invalid_name",
    "duplicate_route",
    "ambiguous_route",
    "handler_not_found",
    "component_not_found",
    "handler_not_python",
    "local_requirement",
    "foreign_permission",
}


# --- codes the source can emit ----------------------------------------------------------


def emitted_codes() -> tuple[dict[str, str], set[tuple[str, str, str]]]:
    """Return every code in `modhub/manifest/*.py` with where it is emitted, and what the
    scan could not resolve as (file, function, expression)."""
    codes: dict[str, str] = {}
    unresolved: set[tuple[str, str, str]] = set()
    for file in sorted(SOURCE.glob("*.py")):
        functions = _functions(file.stem)
        for function in functions.values():
            for expr in _code_arguments(function):
                found = _resolve(expr, function, functions)
                if found is None:
                    unresolved.add((file.name, function.name, ast.unparse(expr)))
                for code in found or ():
                    codes.setdefault(code, f"{file.name}:{expr.lineno}")
    return codes, unresolved


def _functions(module: str) -> dict[str, ast.FunctionDef]:
    """Return the functions of `modhub/manifest/<module>.py` by name (empty if none)."""
    file = SOURCE / f"{module}.py"
    if not file.is_file():
        return {}
    tree = ast.parse(file.read_text("utf-8"), str(file))
    return {f.name: f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}


def _code_arguments(function: ast.FunctionDef) -> Iterator[ast.expr]:
    """Yield the expressions that give an emitted code inside one function."""
    for node in ast.walk(function):
        if (
            function.name == "_explain"
            and isinstance(node, ast.Return)
            and isinstance(node.value, ast.Tuple)
        ):
            yield node.value.elts[0]  # return code, message
        if not isinstance(node, ast.Call):
            continue
        callee = node.func
        name = callee.id if isinstance(callee, ast.Name) else None
        if name == "_error" and node.args:
            yield node.args[0]  # model._error(code, message, **ctx)
        elif name == "ManifestFileError" and len(node.args) >= 2:
            yield node.args[1]  # ManifestFileError(path, code, message)
        elif (
            isinstance(callee, ast.Attribute)
            and callee.attr in ("error", "warn")
            and len(node.args) >= 3
        ):
            code = node.args[1]  # findings.error(location, code, message)
            # exc.code: a ManifestFileError's code, found at its construction.
            if not (isinstance(code, ast.Attribute) and code.attr == "code"):
                yield code


def _resolve(
    expr: ast.expr, function: ast.FunctionDef, functions: dict[str, ast.FunctionDef]
) -> set[str] | None:
    """Return the strings `expr` can be, or None when the scan cannot tell."""
    return _resolve_item(expr, None, function, functions)


def _resolve_item(
    expr: ast.expr,
    index: int | None,
    function: ast.FunctionDef,
    functions: dict[str, ast.FunctionDef],
) -> set[str] | None:
    """Return the strings `expr` (or its element `index`, for a tuple) can be."""
    if index is None and isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return {expr.value}
    if isinstance(expr, ast.Constant) and expr.value is None:
        return set()  # `return None`: no code
    if index is not None and isinstance(expr, ast.Tuple):
        return _resolve_item(expr.elts[index], None, function, functions)
    if isinstance(expr, ast.IfExp):
        body = _resolve_item(expr.body, index, function, functions)
        orelse = _resolve_item(expr.orelse, index, function, functions)
        return None if body is None or orelse is None else body | orelse
    if isinstance(expr, ast.Name):
        return _resolve_name(expr.id, function, functions, index)
    if (
        isinstance(expr, ast.Call)
        and isinstance(expr.func, ast.Attribute)
        and isinstance(expr.func.value, ast.Name)
    ):
        # `formats.requirement_issue(...)`: a function of a sibling module
        return _resolve_item(
            ast.Call(func=ast.Name(id=expr.func.attr), args=[], keywords=[]),
            index,
            function,
            _functions(expr.func.value.id),
        )
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
        callee = functions.get(expr.func.id)
        if callee is None:
            return None
        if callee.name == "_explain":
            return set()  # its return tuples are scanned on their own
        values: set[str] = set()
        for node in ast.walk(callee):
            if isinstance(node, ast.Return) and node.value is not None:
                found = _resolve_item(node.value, index, callee, functions)
                if found is None:
                    return None
                values |= found
        return values
    return None


def _resolve_name(
    name: str,
    function: ast.FunctionDef,
    functions: dict[str, ast.FunctionDef],
    outer: int | None = None,
) -> set[str] | None:
    """Return the strings a local variable (or its element `outer`) is assigned in `function`."""
    values: set[str] = set()
    assigned = False
    for node in ast.walk(function):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            index: int | None = None
            if isinstance(target, ast.Name) and target.id == name:
                index = outer
            elif (
                outer is None
                and isinstance(target, ast.Tuple)
                and any(isinstance(e, ast.Name) and e.id == name for e in target.elts)
            ):
                index = next(
                    k for k, e in enumerate(target.elts) if isinstance(e, ast.Name) and e.id == name
                )
            else:
                continue
            found = _resolve_item(node.value, index, function, functions)
            if found is None:
                return None
            values |= found
            assigned = True
    return values if assigned else None


def documented_codes(doc: str) -> set[str]:
    """Return the codes in the tables of the doc's "Error and warning codes" section."""
    section = doc.split("\n## Error and warning codes\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE))


def undocumented_codes(doc: str) -> dict[str, str]:
    """Return each code the source can emit that the doc's code tables lack."""
    codes, _ = emitted_codes()
    documented = documented_codes(doc)
    return {code: where for code, where in sorted(codes.items()) if code not in documented}


# --- fields of the model ------------------------------------------------------------------


def model_fields(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Yield the dotted path of every field, e.g. `capabilities.api.routes.method`.

    Lists add nothing to the path; the values of a map add `.<key>`.
    """
    for name, info in model.model_fields.items():
        path = f"{prefix}.{info.alias or name}" if prefix else info.alias or name
        yield path
        for sub, suffix in _nested_models(info.annotation):
            yield from model_fields(sub, path + suffix)


def _nested_models(annotation: Any, suffix: str = "") -> Iterator[tuple[type[BaseModel], str]]:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        yield from _nested_models(args[0], suffix)
    elif origin in (typing.Union, types.UnionType):
        for member in args:
            yield from _nested_models(member, suffix)
    elif origin is list:
        yield from _nested_models(args[0], suffix)
    elif origin is dict:
        yield from _nested_models(args[1], suffix + ".<key>")
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, suffix


def documented_fields(doc: str) -> set[str]:
    """Return the field paths the "Fields" section's tables document.

    A table documents the object named in backticks in its heading (`module.json` for
    the top level); a row `` `api.routes` `` under `capabilities` documents
    `capabilities.api` and `capabilities.api.routes`. `[]` is ignored.
    """
    section = doc.split("\n## Fields\n", 1)[1].split("\n## ", 1)[0]
    documented: set[str] = set()
    current: str | None = None
    for line in section.splitlines():
        if line.startswith("#"):
            heading = re.search(r"`([^`]+)`", line)
            current = heading.group(1).replace("[]", "") if heading else None
            if current == ROOT_OBJECT:
                current = ""
            continue
        row = re.match(r"\| `([^`]+)` \|", line)
        if row is None or current is None:
            continue
        parts = row.group(1).replace("[]", "").split(".")
        for end in range(1, len(parts) + 1):
            field = ".".join(parts[:end])
            documented.add(f"{current}.{field}" if current else field)
    return documented


def undocumented_fields(doc: str) -> list[str]:
    """Return every manifest field path the doc's field tables lack."""
    documented = documented_fields(doc)
    return [path for path in model_fields(Manifest) if path not in documented]


# --- tests ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text("utf-8")


def test_the_scan_finds_every_code() -> None:
    codes, unresolved = emitted_codes()
    assert unresolved == PASSTHROUGH, (
        "the scan cannot tell which code these expressions emit; use a string literal "
        f"or teach this test: {sorted(unresolved - PASSTHROUGH)}"
    )
    assert codes.keys() >= KNOWN, f"the scan missed {sorted(KNOWN - codes.keys())}"


def test_every_code_is_documented(doc: str) -> None:
    missing = undocumented_codes(doc)
    assert not missing, "codes missing from the table in docs/manifest.md: " + ", ".join(
        f"{code} ({where})" for code, where in missing.items()
    )


def test_every_documented_code_exists(doc: str) -> None:
    codes, _ = emitted_codes()
    stale = sorted(documented_codes(doc) - codes.keys())
    assert not stale, f"docs/manifest.md lists codes the validator never emits: {stale}"


def test_every_field_is_documented(doc: str) -> None:
    missing = undocumented_fields(doc)
    assert not missing, f"fields missing from the tables in docs/manifest.md: {missing}"


def test_the_checks_notice_a_removed_line(doc: str) -> None:
    without = "\n".join(
        line
        for line in doc.splitlines()
        if not line.startswith(("| `misfire` |", "| `too_long` |", "| `maxLength` |"))
    )
    assert "too_long" in undocumented_codes(without)
    assert undocumented_fields(without) == [
        "capabilities.jobs.handlers.misfire",
        "config.schema.<key>.validation.maxLength",
    ]


def test_json_examples_are_valid(doc: str) -> None:
    blocks = re.findall(r"```json\n(.*?)```", doc, re.DOTALL)
    assert blocks
    for block in blocks:
        data = json.loads(block)
        if "name" in data:
            result = validate_manifest(data)
            assert result.valid, result.errors
