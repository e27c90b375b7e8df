"""HTTP events as API Gateway, ALB and Function URLs send them, behind stages and custom domains:
the routes answer, and the documentation and the OpenAPI document name the prefixed URLs."""

import re
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.cookies import CSRF_COOKIE, SESSION_COOKIE
from app.entrypoint import LambdaHandler
from app.main import app, handler
from tests.helpers.factories import create_user, log_in
from tests.helpers.lambda_events import LambdaContext, http_api_event, response_json, rest_event

pytestmark = pytest.mark.usefixtures("api")

CUSTOM_DOMAIN = "api.tracker.example"


def named_stage_event(path: str, stage: str = "default") -> dict[str, Any]:
    """An HTTP API event through a named stage of the execute-api URL: the stage stays."""
    event = http_api_event("GET", f"/{stage}{path}")
    event["requestContext"]["stage"] = stage
    return event


def rest_custom_domain_event(path: str, base_path: str) -> dict[str, Any]:
    """A REST API event through a custom domain whose API mapping has a path: the mapping's
    path stays in `path` and in `requestContext.path`, and the stage appears in neither."""
    event = rest_event("GET", f"{base_path}{path}", headers={"Host": CUSTOM_DOMAIN})
    event["requestContext"]["path"] = f"{base_path}{path}"
    event["requestContext"]["domainName"] = CUSTOM_DOMAIN
    return event


def alb_event(path: str) -> dict[str, Any]:
    return {
        "requestContext": {
            "elb": {
                "targetGroupArn": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:"
                "targetgroup/tracker/0123456789abcdef"
            }
        },
        "httpMethod": "GET",
        "path": path,
        "queryStringParameters": {},
        "headers": {
            "host": "tracker-alb-123.eu-west-1.elb.amazonaws.com",
            "user-agent": "pytest",
            "x-forwarded-for": "203.0.113.7",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
        },
        "body": "",
        "isBase64Encoded": False,
    }


def function_url_event(path: str) -> dict[str, Any]:
    event = http_api_event("GET", path)
    domain = "abcdefghij0123456789klmnop.lambda-url.eu-west-1.on.aws"
    event["headers"]["host"] = domain
    event["requestContext"] |= {"domainName": domain, "domainPrefix": domain.split(".")[0]}
    event["requestContext"].pop("apiId", None)
    return event


with_base_path = LambdaHandler(app, base_path="/v1")

ROUTED: list[tuple[str, LambdaHandler, dict[str, Any], str]] = [
    ("http api $default", handler, http_api_event("GET", "/health"), ""),
    ("http api named stage", handler, named_stage_event("/health"), "/default"),
    ("rest api stage", handler, rest_event("GET", "/health"), "/prod"),
    ("rest custom domain", with_base_path, rest_custom_domain_event("/health", "/v1"), "/v1"),
    ("alb", handler, alb_event("/health"), ""),
    ("function url", handler, function_url_event("/health"), ""),
]


def with_path(event: dict[str, Any], path: str) -> dict[str, Any]:
    """The same event for another path of the app (the prefix kept where the shape keeps it)."""
    copy = {**event, "requestContext": {**event["requestContext"]}}
    for key in ("path", "rawPath"):
        if key in copy:
            copy[key] = copy[key].removesuffix("/health") + path
    if "http" in copy["requestContext"]:
        http = copy["requestContext"]["http"]
        copy["requestContext"]["http"] = {**http, "path": copy["rawPath"]}
    elif "path" in copy["requestContext"]:
        full_path = copy["requestContext"]["path"]
        copy["requestContext"]["path"] = full_path.removesuffix("/health") + path
    copy["requestContext"]["requestId"] = str(uuid.uuid4())
    return copy


@pytest.mark.parametrize(("name", "lambda_handler", "event", "prefix"), ROUTED)
def test_every_http_shape_reaches_the_route(
    name: str, lambda_handler: LambdaHandler, event: dict[str, Any], prefix: str
) -> None:
    response = lambda_handler(event, LambdaContext())
    assert response["statusCode"] == 200, (name, response.get("body"))
    assert response_json(response) == {"status": "ok", "database": "ok"}


@pytest.mark.parametrize(("name", "lambda_handler", "event", "prefix"), ROUTED)
def test_the_docs_and_the_openapi_document_name_the_prefixed_urls(
    name: str, lambda_handler: LambdaHandler, event: dict[str, Any], prefix: str
) -> None:
    page = lambda_handler(with_path(event, "/docs"), LambdaContext())
    assert page["statusCode"] == 200, (name, page.get("body"))
    html = page["body"]
    assert f'"url": "{prefix}/openapi.json"' in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets
    assert all(asset.startswith(f"{prefix}/docs/assets/") for asset in assets), assets

    document = lambda_handler(with_path(event, "/openapi.json"), LambdaContext())
    assert document["statusCode"] == 200
    servers = response_json(document).get("servers", [])
    assert servers == ([{"url": prefix}] if prefix else []), name

    # Every asset the page names answers through the same event shape.
    for asset in assets:
        answer = lambda_handler(with_path(event, asset.removeprefix(prefix)), LambdaContext())
        assert answer["statusCode"] == 200, (name, asset)


def test_a_path_only_looking_like_a_stage_is_not_stripped() -> None:
    event = http_api_event("GET", "/default/health")  # the $default stage: no prefix
    assert handler(event, LambdaContext())["statusCode"] == 404


def test_rest_cookie_entries_are_joined_as_a_browser_sends_them(
    db: Session, client: TestClient
) -> None:
    user = create_user(db)
    log_in(client, user)
    entries = [f"{name}={client.cookies[name]}" for name in (SESSION_COOKIE, CSRF_COOKIE)]
    event = rest_event("GET", "/users/me")
    # Two Cookie headers, as API Gateway delivers them: every entry in multiValueHeaders, the
    # last one alone in headers.
    event["multiValueHeaders"]["Cookie"] = entries
    event["headers"]["Cookie"] = entries[-1]
    me = handler(event, LambdaContext())
    assert me["statusCode"] == 200, me["body"]
    assert response_json(me)["email"] == user.email
