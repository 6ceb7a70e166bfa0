"""GET /readyz: 200 only when the database answers, its schema is current and it was set
up with this node's secret key; 503 naming the failing check otherwise. /healthz stays
liveness. SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import delete, text, update

from modhub.api.readiness import head_revision
from modhub.cluster.keycheck import CHECK_KEY, check_value
from modhub.db import Database
from modhub.db.models import ClusterMeta
from modhub.services import Services

PROBLEM = "application/problem+json"


def not_ready(client: TestClient, failing: str) -> dict[str, Any]:
    response = client.get("/readyz")
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["failing"] == failing
    assert body["detail"].startswith(f"{failing}: ")
    return body


def test_ready_needs_no_token(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "migrations": "ok", "secretKey": "ok"},
    }


def test_a_database_that_does_not_answer(client: TestClient, services: Services) -> None:
    unreachable = (
        "sqlite:////nonexistent-folder/modhub.db"
        if services.db.dialect == "sqlite"
        else "postgresql://postgres@127.0.0.1:1/modhub?connect_timeout=2"
    )
    real, services.db = services.db, Database(unreachable)
    try:
        body = not_ready(client, "database")
    finally:
        services.db.dispose()
        services.db = real
    assert body["checks"] == {
        "database": body["checks"]["database"],
        "migrations": "not checked",
        "secretKey": "not checked",
    }
    assert "does not answer" in body["checks"]["database"]
    assert client.get("/readyz").status_code == 200


def test_a_schema_behind_the_code(client: TestClient, services: Services) -> None:
    head = head_revision()
    with services.db.write() as session:
        session.execute(text("UPDATE alembic_version SET version_num = '0005'"))
    try:
        body = not_ready(client, "migrations")
    finally:
        with services.db.write() as session:
            session.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})
    assert body["checks"]["database"] == "ok"
    assert "at revision 0005, not" in body["checks"]["migrations"]
    assert "modhub db upgrade" in body["detail"]
    assert body["checks"]["secretKey"] == "not checked"
    assert client.get("/readyz").status_code == 200


def test_a_database_set_up_with_another_secret_key(client: TestClient, services: Services) -> None:
    other = check_value("another-secret-key-of-another-cluster-0123456789")
    with services.db.write() as session:
        mine = session.get(ClusterMeta, CHECK_KEY)
        assert mine is not None
        kept = mine.value
        session.execute(update(ClusterMeta).where(ClusterMeta.key == CHECK_KEY).values(value=other))
    body = not_ready(client, "secretKey")
    assert "MODHUB_SECRET_KEY differs" in body["checks"]["secretKey"]
    assert body["checks"]["database"] == body["checks"]["migrations"] == "ok"

    with services.db.write() as session:
        session.execute(delete(ClusterMeta).where(ClusterMeta.key == CHECK_KEY))
    assert "no secret key check value" in not_ready(client, "secretKey")["detail"]

    with services.db.write() as session:
        session.add(ClusterMeta(key=CHECK_KEY, value=kept))
    assert client.get("/readyz").status_code == 200
