"""Uniqueness lives in the database: concurrent registrations against a real server.

Runs `modhub serve` (uvicorn) on SQLite and on PostgreSQL; the requests go over TCP
from a pool of threads that a barrier releases together.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.api.conftest import API, manifest
from tests.conftest import PASSWORD, LiveServer, bearer

CALLERS = 50


def login(server: LiveServer) -> dict[str, str]:
    response = httpx.post(
        f"{server.url}{API}/auth/login",
        json={"username": "admin", "password": PASSWORD},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return bearer(response.json()["accessToken"])


def post_together(
    server: LiveServer, headers: dict[str, str], bodies: list[object]
) -> Counter[int]:
    """POST every body to /modules at once; return how many answers had each status."""
    barrier = threading.Barrier(len(bodies))
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    with httpx.Client(base_url=server.url, headers=headers, timeout=60, limits=limits) as http:

        def post(body: object) -> int:
            barrier.wait()
            return http.post(f"{API}/modules", json={"manifest": body}).status_code

        with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
            return Counter(pool.map(post, bodies))


def test_fifty_registrations_of_one_version_give_one_201(live_server: LiveServer) -> None:
    headers = login(live_server)

    statuses = post_together(live_server, headers, [manifest("racer")] * CALLERS)

    assert statuses == Counter({201: 1, 409: CALLERS - 1}), (statuses, live_server.output()[-3000:])
    with httpx.Client(base_url=live_server.url, headers=headers, timeout=30) as http:
        detail = http.get(f"{API}/modules/racer").json()
        page = http.get(f"{API}/modules").json()
        audit = http.get(f"{API}/audit", params={"target": "racer", "limit": 500}).json()
    assert [v["version"] for v in detail["versions"]] == ["1.0.0"]
    assert page["total"] == 1
    assert [e["action"] for e in audit["items"]] == ["module.register"]
    assert "Traceback" not in live_server.output()


def test_concurrent_new_versions_of_one_module_are_all_stored(live_server: LiveServer) -> None:
    headers = login(live_server)
    versions = [f"1.{minor}.0" for minor in range(20)]

    statuses = post_together(live_server, headers, [manifest("multi", v) for v in versions])

    assert statuses == Counter({201: len(versions)}), (statuses, live_server.output()[-3000:])
    detail = httpx.get(f"{live_server.url}{API}/modules/multi", headers=headers, timeout=30).json()
    assert sorted(v["version"] for v in detail["versions"]) == sorted(versions)
    assert sum(v["active"] for v in detail["versions"]) == 1
