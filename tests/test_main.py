"""The app's cross-cutting behaviour: error mapping, the last-resort 500, request ids, logs."""

import json
from collections.abc import Iterator

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.dependencies import SessionDep
from app.internal.errors import Conflict, Forbidden, InvalidInput, NotFound, RateLimited
from config.log import JsonFormatter
from tests.helpers.app import extra_routes
from tests.helpers.capture import captured_records

probe = APIRouter(prefix="/_probe")


@probe.get("/not-found")
def raise_not_found() -> None:
    raise NotFound("Job 42 not found")


@probe.get("/conflict")
def raise_conflict() -> None:
    raise Conflict("Already exists")


@probe.get("/forbidden")
def raise_forbidden() -> None:
    raise Forbidden("Admins only")


@probe.get("/invalid")
def raise_invalid() -> None:
    raise InvalidInput("Unknown step 'x'")


@probe.get("/rate-limited")
def raise_rate_limited() -> None:
    raise RateLimited("Too many attempts", retry_after=30)


@probe.get("/crash")
def crash() -> None:
    raise RuntimeError("secret internals /srv/app.py line 3")


@probe.get("/slow")
def slow(session: SessionDep) -> None:
    session.execute(text("SET LOCAL statement_timeout = 50"))
    session.execute(text("SELECT pg_sleep(1)"))


@pytest.fixture
def probe_client(client: TestClient) -> Iterator[TestClient]:
    """The real app with a few extra routes that fail on purpose."""
    with extra_routes(probe):
        yield client


@pytest.mark.parametrize(
    ("path", "status", "detail"),
    [
        ("/_probe/not-found", 404, "Job 42 not found"),
        ("/_probe/conflict", 409, "Already exists"),
        ("/_probe/forbidden", 403, "Admins only"),
        ("/_probe/invalid", 422, "Unknown step 'x'"),
        ("/_probe/rate-limited", 429, "Too many attempts"),
    ],
)
def test_domain_errors_map_to_their_status(
    probe_client: TestClient, path: str, status: int, detail: str
) -> None:
    response = probe_client.get(path)
    assert response.status_code == status
    assert response.json() == {"detail": detail}


def test_rate_limited_says_when_to_retry(probe_client: TestClient) -> None:
    assert probe_client.get("/_probe/rate-limited").headers["retry-after"] == "30"


def test_an_unhandled_error_is_a_bare_500_and_is_logged(probe_client: TestClient) -> None:
    with captured_records("tracker.error") as records:
        response = probe_client.get("/_probe/crash", headers={"X-Request-ID": "req-crash-1"})
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error"}
    assert "secret internals" not in response.text
    assert response.headers["x-request-id"] == "req-crash-1"
    [record] = records
    assert record.exc_info is not None
    assert record.__dict__["request_id"] == "req-crash-1"


def test_a_statement_timeout_is_a_503_not_a_500(probe_client: TestClient) -> None:
    response = probe_client.get("/_probe/slow")
    assert response.status_code == 503
    assert "took too long" in response.json()["detail"]


def test_a_valid_incoming_request_id_is_echoed(client: TestClient) -> None:
    response = client.get("/health", headers={"X-Request-ID": "abc-123.def"})
    assert response.headers["x-request-id"] == "abc-123.def"


@pytest.mark.parametrize("incoming", [None, "bad id with spaces", "x" * 200])
def test_a_missing_or_unsafe_request_id_is_replaced(
    client: TestClient, incoming: str | None
) -> None:
    headers = {"X-Request-ID": incoming} if incoming else {}
    request_id = client.get("/health", headers=headers).headers["x-request-id"]
    assert request_id != incoming
    assert len(request_id) == 32


def test_one_access_log_line_per_request(client: TestClient) -> None:
    with captured_records("tracker.access") as records:
        client.get("/health", headers={"X-Request-ID": "req-log-1"})
    [record] = records
    fields = {key: record.__dict__[key] for key in ("method", "path", "status", "request_id")}
    assert fields == {"method": "GET", "path": "/health", "status": 200, "request_id": "req-log-1"}
    assert record.__dict__["duration_ms"] >= 0

    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "req-log-1"
    assert line["status"] == 200
    assert line["level"] == "INFO"


def test_the_openapi_document_describes_the_app(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["info"]["title"] == "Tracker"
    assert "/health" in document["paths"]
    assert client.get("/docs").status_code == 200
