"""Module configuration: checked against the manifest's config schema, secrets sealed.

Stored form: a JSON object with every set key; a secret's value is `{"$sealed": token}`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from modhub.errors import InvalidInput
from modhub.keys import SecretBox
from modhub.manifest import Manifest
from modhub.manifest.checks import value_problem

MASK = "********"
SEALED = "$sealed"


def initial_config(manifest: Manifest, box: SecretBox) -> dict[str, Any]:
    """Return the defaults of a newly registered module's config."""
    fields = manifest.config.schema_
    return {
        key: _seal(box, value) if fields[key].secret else value
        for key, value in _defaults(manifest).items()
    }


def update_config(
    manifest: Manifest, stored: Mapping[str, Any], incoming: Mapping[str, Any], box: SecretBox
) -> tuple[dict[str, Any], list[str]]:
    """Return the new stored config and the keys that changed, or raise listing every error.

    Keys left out take their default; secrets left out, or sent as the mask, keep their
    stored value; `null` clears a key. A value stored sealed counts as a secret even when
    the manifest no longer says so (an upgrade turned a password into a string): it stays
    sealed until a new value is sent, which is then stored as the manifest says.
    """
    fields = manifest.config.schema_
    defaults = _defaults(manifest)
    errors: list[dict[str, str]] = []
    result: dict[str, Any] = {}
    for key in incoming:
        if key not in fields:
            errors.append(
                _err(key, "unknown_config_key", f"'{key}' is not in the module's config schema")
            )
    for key, spec in fields.items():
        secret = spec.secret or is_sealed(stored.get(key))
        value = incoming.get(key, MASK if secret else defaults.get(key))
        if secret and value == MASK:
            if key in stored:
                result[key] = stored[key]
            elif key in incoming:
                errors.append(
                    _err(
                        key,
                        "no_stored_secret",
                        f"'{key}' has no stored value to keep; send the value",
                    )
                )
            elif spec.required:
                errors.append(_err(key, "required", f"'{key}' is required"))
            continue
        if value is None:
            if spec.required:
                errors.append(_err(key, "required", f"'{key}' is required"))
            continue
        problem = value_problem(spec, value)
        if problem:
            errors.append(_err(key, "invalid_value", f"'{key}' {problem}"))
        else:
            result[key] = _seal(box, value) if spec.secret else value
    if errors:
        raise InvalidInput(f"{len(errors)} invalid config field(s)", errors=errors)
    changed = sorted(k for k in set(result) | set(stored) if result.get(k) != stored.get(k))
    return result, changed


def missing_required(manifest: Manifest, stored: Mapping[str, Any]) -> list[str]:
    """Return the required config keys that have no value."""
    return [k for k, spec in manifest.config.schema_.items() if spec.required and k not in stored]


def masked(stored: Mapping[str, Any]) -> dict[str, Any]:
    """Return the config as callers see it: every secret shown as the mask."""
    return {k: MASK if is_sealed(v) else v for k, v in stored.items()}


def unsealed(stored: Mapping[str, Any], box: SecretBox) -> dict[str, Any]:
    """Return the config with secrets in clear, for the module's own code only."""
    return {k: json.loads(box.open(v[SEALED])) if is_sealed(v) else v for k, v in stored.items()}


def _seal(box: SecretBox, value: Any) -> dict[str, str]:
    return {SEALED: box.seal(json.dumps(value))}


def _defaults(manifest: Manifest) -> dict[str, Any]:
    fields = manifest.config.schema_
    out = {k: spec.default for k, spec in fields.items() if spec.default is not None}
    out.update({k: v for k, v in manifest.config.defaults.items() if k in fields})
    return out


def is_sealed(value: Any) -> bool:
    """Tell whether a stored value is a sealed secret."""
    return isinstance(value, dict) and SEALED in value


def _err(key: str, code: str, message: str) -> dict[str, str]:
    return {"path": f"/config/{key}", "code": code, "message": message}


def carry_over(manifest: Manifest, stored: Mapping[str, Any], box: SecretBox) -> dict[str, Any]:
    """Return a config for a new version: kept values, new defaults, removed keys dropped.

    A value stored sealed stays sealed, whatever the new manifest says of its field: only
    an operator setting it again can store it in clear. Raise InvalidInput listing every
    kept value the new schema refuses.
    """
    kept = {k: v for k, v in stored.items() if k in manifest.config.schema_}
    new, _ = update_config(manifest, {}, unsealed(kept, box), box)
    for key in held_sealed(manifest, kept):
        if key in new:
            new[key] = kept[key]  # checked in clear against the new schema, stored as it was
    return new


def held_sealed(manifest: Manifest, stored: Mapping[str, Any]) -> list[str]:
    """Return the keys stored sealed whose field the manifest does not call secret."""
    fields = manifest.config.schema_
    return sorted(
        k for k, v in stored.items() if k in fields and is_sealed(v) and not fields[k].secret
    )
