"""Read `module.json` from a file or a module folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modhub.manifest.result import Findings, ValidationResult
from modhub.manifest.validate import validate_manifest

MANIFEST_FILE = "module.json"
MAX_MANIFEST_BYTES = 1024 * 1024


class ManifestFileError(Exception):
    """The manifest file could not be read or is not JSON."""

    def __init__(self, path: Path, code: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.code = code
        self.message = message


def manifest_file(path: Path) -> Path:
    """Return the manifest file of `path`, a `module.json` or a module folder."""
    return path / MANIFEST_FILE if path.is_dir() else path


def load_manifest(path: Path) -> Any:
    """Return the parsed JSON of a manifest file or of a folder's `module.json`."""
    file = manifest_file(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ManifestFileError(file, "file_not_found", f"{file} does not exist") from None
    except OSError as exc:
        raise ManifestFileError(file, "unreadable", exc.strerror or str(exc)) from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestFileError(file, "too_large", f"larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ManifestFileError(file, "invalid_json", f"not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ManifestFileError(
            file,
            "invalid_json",
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
        ) from None


def validate_path(path: Path, *, allow_direct_references: bool = False) -> ValidationResult:
    """Validate a manifest file, or a module folder including its handler files."""
    try:
        data = load_manifest(path)
    except ManifestFileError as exc:
        findings = Findings()
        findings.error((), exc.code, exc.message)
        return findings.result()
    return validate_manifest(
        data,
        folder=path if path.is_dir() else None,
        allow_direct_references=allow_direct_references,
    )
