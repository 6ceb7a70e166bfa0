"""The manifest contract: models, JSON Schema and validation of `module.json`."""

from modhub.manifest.loader import ManifestFileError, load_manifest, validate_path
from modhub.manifest.model import Manifest
from modhub.manifest.result import Issue, ValidationResult
from modhub.manifest.schema import manifest_schema
from modhub.manifest.validate import validate_manifest

__all__ = [
    "Issue",
    "Manifest",
    "ManifestFileError",
    "ValidationResult",
    "load_manifest",
    "manifest_schema",
    "validate_manifest",
    "validate_path",
]
