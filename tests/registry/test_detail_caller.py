"""A module's detail checks its caller in the same read as the view (one connection, one
thread hand-off): as strictly as every other endpoint, on every request, whether or not
the view is cached. SQLite and PostgreSQL."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from sqlalchemy import update

from modhub.auth import Permission
from modhub.db.models import User
from modhub.services import Services
from tests.conftest import bearer
from tests.registry.helpers import ACTOR, manifest

API = "/api/v1"


def test_a_revoked_token_is_refused_on_its_next_detail(
    services: Services, client: TestClient, tokens: dict[str, str]
) -> None:
    services.registry.register(manifest("dns"), actor=ACTOR)
    token = services.auth.create_api_token("viewer")
    token_id = services.auth.api_tokens("viewer")[-1].id
    # The next read is cached: the registry's own change (its notification, or the route
    # table's poll seeing it) may drop the cache after the first read, so read until kept.
    for _ in range(50):
        first = client.get(f"{API}/modules/dns", headers=bearer(token))
        assert first.status_code == 200, first.text
        if services.registry.cached(("view", "dns")) is not None:
            break
        time.sleep(0.1)
    assert services.registry.cached(("view", "dns")) is not None

    services.auth.revoke_api_token(token_id)

    assert client.get(f"{API}/modules/dns", headers=bearer(token)).status_code == 401
    assert client.get(f"{API}/modules/dns", headers=bearer(tokens["viewer"])).status_code == 200


def test_a_lost_permission_is_refused_before_the_module_is_looked_up(
    services: Services, client: TestClient, tokens: dict[str, str]
) -> None:
    services.registry.register(manifest("dns"), actor=ACTOR)
    assert client.get(f"{API}/modules/dns", headers=bearer(tokens["viewer"])).status_code == 200

    services.auth.revoke("viewer", Permission.MODULES_READ)

    for name in ("dns", "no-such-module"):
        answer = client.get(f"{API}/modules/{name}", headers=bearer(tokens["viewer"]))
        assert answer.status_code == 403, answer.text
        assert answer.json()["permission"] == Permission.MODULES_READ
    assert client.get(f"{API}/modules/no-such-module").status_code == 401
    assert (
        client.get(f"{API}/modules/no-such-module", headers=bearer(tokens["admin"])).status_code
        == 404
    )


def test_the_detail_reads_its_store_use_on_every_request(
    services: Services, client: TestClient, tokens: dict[str, str]
) -> None:
    services.registry.register(manifest("dns"), actor=ACTOR)
    before = client.get(f"{API}/modules/dns", headers=bearer(tokens["viewer"])).json()
    services.store.set("dns", "k", {"v": 1}, quota_bytes=1 << 20)

    after = client.get(f"{API}/modules/dns", headers=bearer(tokens["viewer"])).json()

    assert before["storage"]["keys"] == 0
    assert after["storage"]["keys"] == 1
    assert after["storage"]["bytes"] > 0
    assert {k: v for k, v in after.items() if k != "storage"} == {
        k: v for k, v in before.items() if k != "storage"
    }


def test_a_disabled_users_tokens_are_refused_on_their_next_detail(
    services: Services, client: TestClient, tokens: dict[str, str]
) -> None:
    services.registry.register(manifest("dns"), actor=ACTOR)
    api_token = services.auth.create_api_token("viewer")
    for token in (tokens["viewer"], api_token):
        assert client.get(f"{API}/modules/dns", headers=bearer(token)).status_code == 200

    with services.db.write() as session:
        session.execute(update(User).where(User.username == "viewer").values(active=False))

    for token in (tokens["viewer"], api_token):
        for name in ("dns", "no-such-module"):  # a view read before, and none
            answer = client.get(f"{API}/modules/{name}", headers=bearer(token))
            assert answer.status_code == 401, answer.text
    assert client.get(f"{API}/modules/dns", headers=bearer(tokens["admin"])).status_code == 200
