"""Redirects never point at the host a request's Host header names.

The attack: `/api/v1/modules/` with `Host: evil.example` redirected to
`http://evil.example/api/v1/modules` (Starlette builds its trailing-slash redirects from
the Host header). Every redirect the app makes is now a path.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.responses import RedirectResponse
from starlette.routing import Route

from modhub.api.redirects import RelativeRedirects
from tests.api.conftest import API
from tests.conftest import bearer

EVIL = {"Host": "evil.example"}


@pytest.mark.parametrize(
    ("path", "target"),
    [
        (f"{API}/modules/", f"{API}/modules"),
        (f"{API}/modules/?limit=1&q=x", f"{API}/modules?limit=1&q=x"),
        (f"{API}/auth/me/", f"{API}/auth/me"),
        ("/healthz/", "/healthz"),
        ("/docs/", "/docs"),  # the OpenAPI page
        ("/login/", "/login"),  # console pages
        ("/modules/", "/modules"),
    ],
)
def test_slash_redirects_are_paths(client: TestClient, path: str, target: str) -> None:
    response = client.get(path, headers=EVIL, follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == target


def test_a_redirect_is_followed_to_the_same_server(
    client: TestClient, tokens: dict[str, str]
) -> None:
    response = client.get(f"{API}/modules/", headers=bearer(tokens["viewer"]))
    assert response.status_code == 200
    assert response.url.path == f"{API}/modules"


def redirecting_app(location: str) -> TestClient:
    """Return a client of a one-route app behind the middleware, redirecting to `location`."""

    async def go(_request: object) -> RedirectResponse:
        return RedirectResponse(location)

    return TestClient(RelativeRedirects(Starlette(routes=[Route("/go", go)])))


@pytest.mark.parametrize(
    ("location", "sent"),
    [
        ("http://evil.example/a?b=1#c", "/a?b=1#c"),
        ("http://EVIL.example//other.example/x", "/other.example/x"),  # never "//host"
        ("https://evil.example/a", "https://evil.example/a"),  # another scheme: elsewhere
        ("http://elsewhere.example/a", "http://elsewhere.example/a"),
        ("/already/a/path", "/already/a/path"),
    ],
)
def test_only_redirects_to_the_requested_origin_become_paths(location: str, sent: str) -> None:
    with redirecting_app(location) as client:
        response = client.get("/go", headers=EVIL, follow_redirects=False)
    assert response.headers["location"] == sent
