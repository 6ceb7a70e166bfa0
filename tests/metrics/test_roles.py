"""The built-in `metrics` role: made at start where missing, never reset once there.
SQLite and PostgreSQL."""

from __future__ import annotations

from modhub.auth.roles import seed_roles
from modhub.services import Services


def test_the_metrics_role_is_made_at_start_with_metrics_read(services: Services) -> None:
    assert services.auth.roles()["metrics"] == ["metrics:read"]
    assert seed_roles(services.db) == []  # a second start makes nothing


def test_an_operators_change_to_the_role_is_kept(services: Services) -> None:
    services.auth.grant("metrics", "modules:read")
    services.auth.revoke("metrics", "metrics:read")
    assert seed_roles(services.db) == []
    assert services.auth.roles()["metrics"] == ["modules:read"]
