"""The published JSON Schema of `module.json`, generated from the models."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from modhub.manifest.model import Manifest

SCHEMA_FILE = "module.schema.json"
SCHEMA_ID = "https://modhub.dev/schemas/module.schema.json"


def generate_schema() -> dict[str, Any]:
    """Return the JSON Schema of the manifest, built from the Pydantic models."""
    schema = Manifest.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "title": "modhub module manifest (module.json)",
    }


@cache
def manifest_schema() -> dict[str, Any]:
    """Return the JSON Schema shipped in the package (kept equal to `generate_schema`)."""
    text = resources.files("modhub.manifest").joinpath(SCHEMA_FILE).read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def render_schema() -> str:
    """Return the schema as the text of the shipped file."""
    return json.dumps(generate_schema(), indent=2, sort_keys=True) + "\n"
