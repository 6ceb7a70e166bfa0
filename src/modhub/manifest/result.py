"""The outcome of validating a manifest: errors and warnings with JSON pointers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict

Location = tuple[str | int, ...]


def pointer(location: Iterable[str | int]) -> str:
    """Return the RFC 6901 JSON pointer of a location such as ('routes', 1, 'path')."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in location)


class Issue(BaseModel):
    """One problem found in a manifest."""

    model_config = ConfigDict(frozen=True)

    path: str
    code: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def public(self) -> dict[str, str]:
        """Return the issue as the API and `--json` show it."""
        return {"path": self.path, "code": self.code, "message": self.message}


class ValidationResult(BaseModel):
    """Every error and warning found in one manifest."""

    errors: list[Issue] = []
    warnings: list[Issue] = []

    @property
    def valid(self) -> bool:
        """Return whether the manifest has no errors (warnings allowed)."""
        return not self.errors

    def public(self) -> dict[str, object]:
        """Return `{"valid", "errors", "warnings"}` as the API and CLI print it."""
        return {
            "valid": self.valid,
            "errors": [e.public() for e in self.errors],
            "warnings": [w.public() for w in self.warnings],
        }


class Findings:
    """Collects issues while checks run."""

    def __init__(self) -> None:
        self.errors: list[Issue] = []
        self.warnings: list[Issue] = []

    def error(self, location: Location, code: str, message: str) -> None:
        """Record an error at `location`."""
        self.errors.append(Issue(path=pointer(location), code=code, message=message))

    def warn(self, location: Location, code: str, message: str) -> None:
        """Record a warning at `location`."""
        self.warnings.append(
            Issue(path=pointer(location), code=code, message=message, severity="warning")
        )

    def result(self) -> ValidationResult:
        """Return the findings sorted by path, list indexes in numeric order."""
        return ValidationResult(
            errors=sorted(self.errors, key=_path_order),
            warnings=sorted(self.warnings, key=_path_order),
        )


def _path_order(issue: Issue) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isdecimal() else (1, p) for p in issue.path.split("/")]
