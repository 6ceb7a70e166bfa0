"""Module configuration: validation, defaults, and secrets sealed at rest and never shown."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from sqlalchemy import text

from modhub.errors import InvalidInput, ModhubError, NotFound
from modhub.keys import SecretBox
from modhub.registry import Registry
from modhub.registry.config import MASK
from modhub.services import Services
from tests.registry.helpers import ACTOR, audit, manifest, snapshot

SCHEMA: dict[str, Any] = {
    "host": {"type": "string", "required": True, "validation": {"pattern": "^[a-z.]+$"}},
    "user": {"type": "string", "validation": {"minLength": 3, "maxLength": 8}},
    "port": {"type": "integer", "default": 443, "validation": {"min": 1, "max": 65535}},
    "ratio": {"type": "number", "validation": {"min": 0, "max": 1}},
    "verbose": {"type": "boolean", "default": False},
    "mode": {"type": "select", "options": ["fast", "safe"], "default": "safe"},
    "level": {"type": "select", "options": [{"value": 1, "label": "low"}, {"value": 2}]},
    "password": {"type": "password", "required": True, "validation": {"minLength": 8}},
    "apiKey": {"type": "string", "sensitive": True},
    "pin": {"type": "integer", "sensitive": True},
}
DEFAULTS = {"port": 443, "verbose": False, "mode": "safe"}
VALID: dict[str, Any] = {
    "host": "vc.example",
    "user": "admin",
    "ratio": 0.25,
    "level": 2,
    "password": "hunter2-CLEAR",
    "apiKey": "key-CLEAR-42",
    "pin": 987654,
}
SECRETS = ("password", "apiKey", "pin")
CLEAR_SECRETS = ("hunter2-CLEAR", "key-CLEAR-42", "987654")


@pytest.fixture
def registry(services: Services) -> Registry:
    registry = services.registry
    registry.register(manifest("vc", config=SCHEMA), actor=ACTOR)
    return registry


def raw_config(services: Services, name: str = "vc") -> str:
    """Return the `modules.config` column as stored, as text."""
    with services.db.read() as session:
        value = session.execute(
            text("SELECT config FROM modules WHERE name = :name"), {"name": name}
        ).scalar_one()
    return value if isinstance(value, str) else json.dumps(value)


def invalid(registry: Registry, config: dict[str, Any]) -> list[dict[str, str]]:
    """Return the errors of a refused config update."""
    with pytest.raises(InvalidInput) as caught:
        registry.set_config("vc", config, actor=ACTOR)
    return caught.value.errors or []


# -- validation ----------------------------------------------------------------------------------


def test_defaults_are_applied_on_registration(registry: Registry) -> None:
    assert registry.get("vc").config == DEFAULTS


def test_a_valid_config_is_stored_with_defaults(registry: Registry) -> None:
    shown = registry.set_config("vc", VALID, actor=ACTOR)

    expected = {**DEFAULTS, **VALID, **dict.fromkeys(SECRETS, MASK)}
    assert shown == expected
    assert registry.get("vc").config == expected


def test_keys_left_out_go_back_to_their_default(registry: Registry) -> None:
    registry.set_config("vc", {**VALID, "port": 8443, "mode": "fast", "user": "root"}, actor=ACTOR)

    shown = registry.set_config("vc", {"host": "vc.example", "password": MASK}, actor=ACTOR)

    assert shown["port"] == 443
    assert shown["mode"] == "safe"
    assert "user" not in shown


def test_null_clears_an_optional_key(registry: Registry) -> None:
    registry.set_config("vc", VALID, actor=ACTOR)

    shown = registry.set_config("vc", {**VALID, "ratio": None, "apiKey": None}, actor=ACTOR)

    assert "ratio" not in shown
    assert "apiKey" not in shown
    assert "apiKey" not in registry.config_for_code("vc")


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("host", 5, "string"),
        ("host", "Not A Host", "pattern"),
        ("user", "ab", "at least 3"),
        ("user", "abcdefghi", "at most 8"),
        ("port", 0, "at least 1"),
        ("port", 70000, "at most 65535"),
        ("port", 1.5, "whole number"),
        ("port", "443", "number"),
        ("port", True, "number"),
        ("ratio", 1.5, "at most 1"),
        ("ratio", -0.1, "at least 0"),
        ("ratio", "half", "number"),
        ("verbose", "yes", "true or false"),
        ("verbose", 1, "true or false"),
        ("mode", "slow", "fast"),
        ("mode", ["fast"], "one of"),
        ("level", 3, "one of"),
        ("level", True, "one of"),
        ("password", 12345678, "string"),
        ("password", "short-1", "at least 8"),
        ("pin", "1234", "number"),
    ],
)
def test_each_rule_is_checked(
    services: Services, registry: Registry, key: str, value: Any, fragment: str
) -> None:
    before = snapshot(services.db)

    errors = invalid(registry, {**VALID, key: value})

    assert [(e["path"], e["code"]) for e in errors] == [(f"/config/{key}", "invalid_value")]
    assert fragment in errors[0]["message"]
    assert key in errors[0]["message"]
    assert snapshot(services.db) == before


def test_an_invalid_secret_is_not_echoed(registry: Registry) -> None:
    [error] = invalid(registry, {**VALID, "password": "tiny-pw"})

    assert "tiny-pw" not in json.dumps(error)


def test_required_keys_are_required(registry: Registry) -> None:
    config = {k: v for k, v in VALID.items() if k not in ("host", "password")}

    errors = invalid(registry, config)

    assert sorted((e["path"], e["code"]) for e in errors) == [
        ("/config/host", "required"),
        ("/config/password", "required"),
    ]
    assert [e["path"] for e in invalid(registry, {**VALID, "host": None})] == ["/config/host"]


def test_unknown_keys_are_refused(registry: Registry) -> None:
    errors = invalid(registry, {**VALID, "colour": "blue"})

    assert [(e["path"], e["code"]) for e in errors] == [("/config/colour", "unknown_config_key")]


def test_every_invalid_field_is_listed_at_once(services: Services, registry: Registry) -> None:
    before = snapshot(services.db)
    config = {
        "host": "UPPER",
        "user": "ab",
        "port": 0,
        "ratio": 2,
        "verbose": "yes",
        "mode": "slow",
        "level": 3,
        "apiKey": 7,
        "pin": "x",
        "colour": "blue",
        "size": 3,
    }

    errors = invalid(registry, config)

    assert {e["path"]: e["code"] for e in errors} == {
        "/config/host": "invalid_value",
        "/config/user": "invalid_value",
        "/config/port": "invalid_value",
        "/config/ratio": "invalid_value",
        "/config/verbose": "invalid_value",
        "/config/mode": "invalid_value",
        "/config/level": "invalid_value",
        "/config/apiKey": "invalid_value",
        "/config/pin": "invalid_value",
        "/config/password": "required",
        "/config/colour": "unknown_config_key",
        "/config/size": "unknown_config_key",
    }
    assert len(errors) == 12
    assert snapshot(services.db) == before


def test_an_unknown_module_is_not_found(services: Services) -> None:
    with pytest.raises(NotFound):
        services.registry.set_config("ghost", {}, actor=ACTOR)
    with pytest.raises(NotFound):
        services.registry.config_for_code("ghost")


# -- secrets ---------------------------------------------------------------------------------------


def test_secrets_are_encrypted_at_rest(services: Services, registry: Registry) -> None:
    registry.set_config("vc", VALID, actor=ACTOR)

    raw = raw_config(services)

    for clear in CLEAR_SECRETS:
        assert clear not in raw
    stored = json.loads(raw)
    for key in SECRETS:
        assert stored[key] != VALID[key]
        assert MASK not in json.dumps(stored[key])
    assert stored["host"] == "vc.example"  # only secrets are sealed


def test_secrets_are_returned_masked(registry: Registry) -> None:
    shown = registry.set_config("vc", VALID, actor=ACTOR)

    for view in (shown, registry.get("vc").config, registry.get("vc").model_dump()["config"]):
        assert {k: view[k] for k in SECRETS} == dict.fromkeys(SECRETS, MASK)
        for clear in CLEAR_SECRETS:
            assert clear not in json.dumps(view)


def test_config_for_code_returns_clear_values_with_their_types(registry: Registry) -> None:
    registry.set_config("vc", VALID, actor=ACTOR)

    config = registry.config_for_code("vc")

    assert config == {**DEFAULTS, **VALID}
    assert isinstance(config["pin"], int)
    assert not isinstance(config["pin"], bool)
    assert isinstance(config["ratio"], float)
    assert config["verbose"] is False
    assert isinstance(config["password"], str)


def test_sending_the_mask_keeps_the_stored_secret(registry: Registry) -> None:
    registry.set_config("vc", VALID, actor=ACTOR)

    shown = registry.set_config(
        "vc", {**VALID, **dict.fromkeys(SECRETS, MASK), "host": "other.host"}, actor=ACTOR
    )

    assert shown["host"] == "other.host"
    config = registry.config_for_code("vc")
    assert {k: config[k] for k in SECRETS} == {k: VALID[k] for k in SECRETS}
    assert config["host"] == "other.host"


def test_leaving_a_secret_out_keeps_it(registry: Registry) -> None:
    registry.set_config("vc", VALID, actor=ACTOR)

    registry.set_config("vc", {"host": "vc.example"}, actor=ACTOR)

    config = registry.config_for_code("vc")
    assert {k: config[k] for k in SECRETS} == {k: VALID[k] for k in SECRETS}


def test_a_new_secret_value_replaces_the_old(services: Services, registry: Registry) -> None:
    registry.set_config("vc", VALID, actor=ACTOR)

    registry.set_config("vc", {**VALID, "password": "brand-NEW-pass"}, actor=ACTOR)

    assert registry.config_for_code("vc")["password"] == "brand-NEW-pass"
    assert "brand-NEW-pass" not in raw_config(services)


def test_the_mask_without_a_stored_secret_is_refused(registry: Registry) -> None:
    errors = invalid(registry, {**VALID, "apiKey": MASK})

    assert [(e["path"], e["code"]) for e in errors] == [("/config/apiKey", "no_stored_secret")]


def test_a_secret_default_is_sealed_too(services: Services) -> None:
    schema = {"token": {"type": "string", "sensitive": True, "default": "default-TOKEN-7"}}
    services.registry.register(manifest("tk", config=schema), actor=ACTOR)

    assert "default-TOKEN-7" not in raw_config(services, "tk")
    assert services.registry.get("tk").config == {"token": MASK}
    assert services.registry.config_for_code("tk") == {"token": "default-TOKEN-7"}


def test_the_audit_entry_names_the_keys_but_no_value(
    services: Services, registry: Registry
) -> None:
    registry.set_config("vc", VALID, actor=ACTOR)
    registry.set_config("vc", {**VALID, "password": MASK, "port": 8443}, actor="bob")

    first, second = audit(services.db, "vc", "module.config")
    assert first.actor == ACTOR
    assert set(first.detail["changed"]) == set(VALID)
    assert second.actor == "bob"
    # re-sent secrets may count as changed (sealing is randomised); the kept one may not
    assert "port" in second.detail["changed"]
    assert set(second.detail["changed"]) <= {"port", "apiKey", "pin"}
    for entry in (first, second):
        dumped = json.dumps(entry.detail)
        for value in (*CLEAR_SECRETS, "vc.example", "admin", "8443", "0.25"):
            assert value not in dumped


def test_an_unchanged_config_adds_no_audit_entry(services: Services, registry: Registry) -> None:
    registry.set_config("vc", VALID, actor=ACTOR)
    masked = {**VALID, **dict.fromkeys(SECRETS, MASK)}
    registry.set_config("vc", masked, actor=ACTOR)

    assert len(audit(services.db, "vc", "module.config")) == 1


def test_secrets_never_reach_the_logs(registry: Registry, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")

    registry.set_config("vc", VALID, actor=ACTOR)
    registry.get("vc")
    registry.config_for_code("vc")

    assert "modules" in caplog.text  # the SQL was logged, with its parameters
    for clear in CLEAR_SECRETS:
        assert clear not in caplog.text


def test_another_secret_key_cannot_decrypt(services: Services, registry: Registry) -> None:
    registry.set_config("vc", VALID, actor=ACTOR)
    other = Registry(services.db, SecretBox("another-secret-key-that-is-long-enough-42"))

    with pytest.raises(ModhubError) as caught:
        other.config_for_code("vc")

    assert "MODHUB_SECRET_KEY" in caught.value.detail
    assert "cannot be decrypted" in caught.value.detail
    assert other.get("vc").config == registry.get("vc").config  # masking needs no key


def test_sealing_is_randomised_and_keyed() -> None:
    box = SecretBox("a-secret-key-that-is-long-enough-0123456789")

    first, second = box.seal("value"), box.seal("value")

    assert first != second
    assert box.open(first) == box.open(second) == "value"
    with pytest.raises(ModhubError):
        SecretBox("b-secret-key-that-is-long-enough-0123456789").open(first)
    with pytest.raises(ModhubError):
        box.open("not a token")
