"""HTTP itself: 405 names every method of the path, and every API answer carries the security
headers OWASP's REST cheat sheet lists."""

import re
from collections import defaultdict
from collections.abc import Iterator

import pytest
from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.main import app
from app.middleware import API_CONTENT_SECURITY_POLICY
from tests.helpers.factories import create_admin, log_in


def methods_by_path() -> dict[str, set[str]]:
    """From the OpenAPI document: every documented method of every path."""
    paths: dict[str, set[str]] = defaultdict(set)
    for path, operations in app.openapi()["paths"].items():
        paths[path] |= {method.upper() for method in operations}
    return paths


MULTI_METHOD_PATHS = sorted(
    (path, methods) for path, methods in methods_by_path().items() if len(methods) >= 2
)


def concrete(path: str) -> str:
    """The path with `1` for each parameter: routing answers 405 before reading them."""
    return re.sub(r"\{[^}]+\}", "1", path)


def test_there_are_paths_with_several_methods() -> None:
    assert ("/api-keys", {"GET", "POST"}) in MULTI_METHOD_PATHS
    assert len(MULTI_METHOD_PATHS) >= 8


@pytest.mark.parametrize(("path", "methods"), MULTI_METHOD_PATHS)
def test_405_allows_every_method_of_the_path(
    client: TestClient, path: str, methods: set[str]
) -> None:
    unsupported = next(m for m in ("DELETE", "PUT", "OPTIONS") if m not in methods)
    response = client.request(unsupported, concrete(path))
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == methods
    assert unsupported in response.json()["detail"]


def test_options_on_api_keys_allows_get_and_post(client: TestClient) -> None:
    response = client.options("/api-keys")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"


def test_405_on_a_single_method_path_names_that_method(client: TestClient) -> None:
    response = client.delete("/health")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"


def test_api_answers_carry_the_security_headers(db: Session, client: TestClient) -> None:
    log_in(client, create_admin(db))
    answers = [
        client.get("/health"),
        client.get("/users/me"),
        client.get("/nowhere"),
        client.delete("/health"),
        client.post("/customers", json={}),
        client.get("/billing/usage", params={"format": "csv"}),
        client.get("/openapi.json"),
    ]
    for response in answers:
        headers = response.headers
        assert headers["content-security-policy"] == API_CONTENT_SECURITY_POLICY, response.url
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-store"
        assert headers["strict-transport-security"] == "max-age=31536000"


def test_hsts_is_sent_only_over_https(api: None) -> None:
    with TestClient(app, base_url="http://testserver") as plain:
        response = plain.get("/health")
    assert "strict-transport-security" not in response.headers
    assert response.headers["x-frame-options"] == "DENY"


page_probe = APIRouter(prefix="/_probe")


@page_probe.get("/page", include_in_schema=False, response_class=HTMLResponse)
def page_with_its_own_policy() -> HTMLResponse:
    return HTMLResponse("<p>hi</p>", headers={"Content-Security-Policy": "default-src 'self'"})


@page_probe.get("/crash", include_in_schema=False)
def crash() -> None:
    raise RuntimeError("boom")


@pytest.fixture
def probe_client(client: TestClient) -> Iterator[TestClient]:
    before = list(app.router.routes)
    app.include_router(page_probe)
    try:
        yield client
    finally:
        app.router.routes[:] = before


def test_a_route_s_own_policy_wins(probe_client: TestClient) -> None:
    response = probe_client.get("/_probe/page")
    assert response.headers["content-security-policy"] == "default-src 'self'"
    assert response.headers["x-frame-options"] == "DENY"


def test_the_last_resort_500_carries_the_headers_too(probe_client: TestClient) -> None:
    response = probe_client.get("/_probe/crash")
    assert response.status_code == 500
    assert response.headers["content-security-policy"] == API_CONTENT_SECURITY_POLICY
    assert response.headers["x-request-id"]
