"""docs/modules.md documents every extension point, and its examples work.

(a) Every name in `modhub.sdk.__all__` has a reference entry with its signature, every field of
Request, Response, User and JobContext is described in its class's entry, and the handler,
job and UI page contracts are stated.
(b) Every Python, JSON and JavaScript block is checked as the HTML comment before it says:
`<!-- test -->` and `<!-- test as PATH -->` blocks run (with their `test_*` functions),
`<!-- same as PATH -->` blocks equal that file, `<!-- manifest -->` blocks validate, and
`<!-- valid json -->` blocks parse.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

import modhub.sdk
from modhub.manifest import validate_manifest
from tests.sdk.conftest import ROOT

GUIDE = ROOT / "docs" / "modules.md"
CLASSES = ("Request", "Response", "User", "JobContext")
CONTRACTS = (
    "def handler(request: Request) -> Response | Any",
    "def handler(context: JobContext) -> Any",
    "mount(element, context)",
    "unmount(element)",
    "`apiBase`",
    "`fetch`",
    "`user`",
)
CHECKED_LANGUAGES = ("python", "json", "javascript")
MARKER = re.compile(r"<!--\s*(test as|test|same as|manifest|valid json)\s*(\S*)\s*-->")
MIN_RUNNABLE = 5


# -- (a) every extension point is documented -------------------------------------------------


def reference_sections(text: str) -> dict[str, str]:
    """Return the reference entries: the name in a `### `name...`` heading → its text."""
    sections: dict[str, str] = {}
    parts = re.split(r"^### ", text, flags=re.MULTILINE)
    for part in parts[1:]:
        heading, _, body = part.partition("\n")
        found = re.match(r"`(\w+)", heading)
        if found:
            body = re.split(r"^#{1,3} ", body, maxsplit=1, flags=re.MULTILINE)[0]
            sections[found.group(1)] = heading + "\n" + body
    return sections


def public_members(cls: type) -> list[str]:
    """Return a class's fields, public properties and public methods."""
    names = [f.name for f in dataclasses.fields(cls)]
    for name, value in vars(cls).items():
        if name.startswith("_") or name in names:
            continue
        if isinstance(value, property) or inspect.isfunction(value):
            names.append(name)
    return names


def constructor_in(section: str, name: str) -> list[str] | None:
    """Return the parameter names of the `Name(...)` signature the section shows, if any."""
    found = re.search(rf"`{name}\(([^`]*)\)`", section)
    if found is None:
        return None
    return [p.split("=")[0].strip() for p in found.group(1).replace("\n", " ").split(",")]


def parameter(p: inspect.Parameter) -> str:
    """Return a parameter as the guide writes it: `name`, or `name=default`."""
    return p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"


def undocumented(text: str) -> list[str]:
    """Return every extension point `text` fails to document (empty when all are)."""
    sections = reference_sections(text)
    missing: list[str] = []
    for name in modhub.sdk.__all__:
        obj = getattr(modhub.sdk, name)
        if name not in sections:
            missing.append(f"no reference entry '### `{name}...`' for modhub.sdk.{name}")
            continue
        section = sections[name]
        if inspect.isfunction(obj):
            signature = (
                f"`{name}({', '.join(map(parameter, inspect.signature(obj).parameters.values()))})"
            )
            if signature not in section:
                missing.append(f"{name}: the entry does not give its signature {signature}`")
        elif dataclasses.is_dataclass(obj):
            fields = [f.name for f in dataclasses.fields(obj) if f.init]
            if constructor_in(section, name) != fields:
                missing.append(f"{name}: the entry does not give `{name}({', '.join(fields)})`")
    for name in CLASSES:
        section = sections.get(name, "")
        for member in public_members(getattr(modhub.sdk, name)):
            if f"`{member}`" not in section and f"`{member}(" not in section:
                missing.append(f"{name}.{member} is not described in the `{name}` entry")
    for contract in CONTRACTS:
        if contract not in text:
            missing.append(f"the contract '{contract}' is not stated")
    return missing


def test_every_extension_point_is_documented() -> None:
    assert undocumented(GUIDE.read_text()) == []


@pytest.mark.parametrize(
    ("remove", "reported"),
    [
        ("`query_lists`", "Request.query_lists"),
        ("`scheduled_time`", "JobContext.scheduled_time"),
        ("`can(permission)`", "User.can"),
        ("`content_type`", "Response.content_type"),
        ("### `to_response(value) -> Response`", "to_response"),
        ("`run_job(module_dir, ref, context) -> Any`", "run_job"),
        ("unmount(element)", "unmount(element)"),
    ],
)
def test_the_check_fails_when_a_point_is_undocumented(remove: str, reported: str) -> None:
    text = GUIDE.read_text()
    assert remove in text
    problems = undocumented(text.replace(remove, "`something-else`"))
    assert any(reported in problem for problem in problems), problems


def test_the_check_notices_a_new_field(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclass
    class Wider(modhub.sdk.JobContext):
        deadline: str = ""

    monkeypatch.setattr(modhub.sdk, "JobContext", Wider)
    problems = undocumented(GUIDE.read_text())
    assert "JobContext.deadline is not described in the `JobContext` entry" in problems
    assert any("JobContext: the entry does not give" in p for p in problems)


# -- (b) the examples work -------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block of the guide and the marker comment before it."""

    line: int
    language: str
    code: str
    kind: str | None
    argument: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.kind or 'unmarked'} {self.language} {self.argument}"


def code_blocks(text: str) -> list[Block]:
    """Return every fenced block of `text`, with the marker on the last line before it."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if fence is None:
            i += 1
            continue
        end = lines.index("```", i + 1)
        before = next((line for line in reversed(lines[:i]) if line.strip()), "")
        marker = MARKER.fullmatch(before.strip())
        blocks.append(
            Block(
                line=i + 1,
                language=fence.group(1),
                code="\n".join(lines[i + 1 : end]) + "\n",
                kind=marker.group(1) if marker else None,
                argument=marker.group(2) if marker else "",
            )
        )
        i = end + 1
    return blocks


BLOCKS = [b for b in code_blocks(GUIDE.read_text()) if b.language in CHECKED_LANGUAGES]


def test_every_example_says_how_it_is_checked() -> None:
    unmarked = [str(b) for b in BLOCKS if b.kind is None]
    assert unmarked == [], "mark these blocks (see the end of docs/modules.md)"
    runnable = [b for b in BLOCKS if b.kind in ("test", "test as")]
    assert len(runnable) >= MIN_RUNNABLE
    assert all(b.language == "python" for b in runnable)


def run_block(block: Block) -> dict[str, Any]:
    """Run a Python block as a file would run, then call the `test_*` functions it defines."""
    name = f"docs_modules_line_{block.line}"
    namespace: dict[str, Any] = {"__name__": name}
    if block.kind == "test as":
        namespace["__file__"] = str(ROOT / block.argument)
    exec(compile(block.code, f"{GUIDE}:{block.line}", "exec"), namespace)
    for key, value in list(namespace.items()):
        if key.startswith("test_") and callable(value):
            value()
    return namespace


@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_example(block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    if block.kind in ("test", "test as"):
        run_block(block)
    elif block.kind == "same as":
        assert block.code == (ROOT / block.argument).read_text(), f"{block} differs from the file"
    elif block.kind == "manifest":
        result = validate_manifest(json.loads(block.code))
        assert result.valid, result.public()
    elif block.kind == "valid json":
        json.loads(block.code)
    else:
        pytest.fail(f"{block} has no marker")


def test_the_pytest_example_defines_tests_that_pass() -> None:
    (block,) = [b for b in BLOCKS if b.kind == "test as"]
    namespace = run_block(block)
    assert sum(key.startswith("test_") for key in namespace) >= 4
