from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import app, handler
from config.database import Database
from tests.helpers.app import requests_on
from tests.helpers.lambda_events import (
    LambdaContext,
    http_api_event,
    response_headers,
    response_json,
    rest_event,
)


def test_health_is_ok_when_the_database_answers(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


@pytest.fixture
def unreachable_database() -> Iterator[None]:
    """Route requests to a database nobody listens on."""
    database = Database("postgresql+psycopg2://tracker@127.0.0.1:1/tracker", connect_timeout_s=1)

    try:
        with requests_on(database):
            yield
    finally:
        database.dispose()


@pytest.mark.usefixtures("unreachable_database")
def test_health_is_503_with_a_clear_body_when_the_database_is_unreachable() -> None:
    with TestClient(app, base_url="https://testserver") as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "unreachable"}


@pytest.mark.usefixtures("api")
def test_lambda_handler_answers_a_rest_api_event() -> None:
    context = LambdaContext()
    response = handler(rest_event("GET", "/health"), context)
    assert response["statusCode"] == 200
    assert response_json(response) == {"status": "ok", "database": "ok"}
    assert response_headers(response)["x-request-id"] == [context.aws_request_id]


@pytest.mark.usefixtures("api")
def test_lambda_handler_answers_an_http_api_event() -> None:
    context = LambdaContext()
    response = handler(http_api_event("GET", "/health"), context)
    assert response["statusCode"] == 200
    assert response_json(response) == {"status": "ok", "database": "ok"}
    assert response_headers(response)["x-request-id"] == [context.aws_request_id]


@pytest.mark.usefixtures("api")
def test_lambda_handler_answers_unknown_paths_with_404() -> None:
    response = handler(http_api_event("GET", "/no-such-thing"), LambdaContext())
    assert response["statusCode"] == 404
    assert response_json(response) == {"detail": "Not Found"}
