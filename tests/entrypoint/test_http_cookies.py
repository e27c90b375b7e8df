"""The Lambda handler with real API Gateway event shapes: cookies out and back in."""

from collections.abc import Callable
from decimal import Decimal
from http.cookies import SimpleCookie
from typing import Any

import pytest
from sqlalchemy.orm import Session

from app.cookies import CSRF_COOKIE, SESSION_COOKIE
from app.main import handler
from tests.helpers.factories import (
    PASSWORD,
    create_admin,
    create_api_key,
    create_configuration,
    create_customer,
    create_user,
)
from tests.helpers.lambda_events import (
    LambdaContext,
    http_api_event,
    response_headers,
    response_json,
    rest_event,
)

pytestmark = pytest.mark.usefixtures("api")


def cookie_pairs(set_cookie_values: list[str]) -> dict[str, str]:
    pairs = {}
    for value in set_cookie_values:
        cookie = SimpleCookie()
        cookie.load(value)
        pairs.update({name: morsel.value for name, morsel in cookie.items()})
    return pairs


def test_http_api_login_returns_both_cookies_and_they_authenticate_a_write(db: Session) -> None:
    user = create_user(db)
    login = handler(
        http_api_event("POST", "/auth/login", body={"email": user.email, "password": PASSWORD}),
        LambdaContext(),
    )
    assert login["statusCode"] == 200
    cookies = cookie_pairs(login["cookies"])
    assert set(cookies) == {SESSION_COOKIE, CSRF_COOKIE}
    assert any("HttpOnly" in value for value in login["cookies"])
    csrf_token = response_json(login)["csrf_token"]

    cookie_list = [f"{name}={value}" for name, value in cookies.items()]
    created = handler(
        http_api_event(
            "POST",
            "/api-keys",
            cookies=cookie_list,
            headers={"X-CSRF-Token": csrf_token},
            body={"name": "from lambda", "scopes": ["read"]},
        ),
        LambdaContext(),
    )
    assert created["statusCode"] == 201, created["body"]
    assert response_json(created)["user_id"] == user.id

    refused = handler(
        http_api_event(
            "POST", "/api-keys", cookies=cookie_list, body={"name": "no csrf", "scopes": ["read"]}
        ),
        LambdaContext(),
    )
    assert refused["statusCode"] == 403


def test_rest_api_login_returns_both_set_cookie_headers_and_they_authenticate(
    db: Session,
) -> None:
    user = create_user(db)
    login = handler(
        rest_event("POST", "/auth/login", body={"email": user.email, "password": PASSWORD}),
        LambdaContext(),
    )
    assert login["statusCode"] == 200
    set_cookies = response_headers(login)["set-cookie"]
    assert len(set_cookies) == 2
    cookies = cookie_pairs(set_cookies)
    assert set(cookies) == {SESSION_COOKIE, CSRF_COOKIE}
    csrf_token = response_json(login)["csrf_token"]

    cookie_header = "; ".join(f"{name}={value}" for name, value in cookies.items())
    me = handler(rest_event("GET", "/users/me", headers={"Cookie": cookie_header}), LambdaContext())
    assert me["statusCode"] == 200
    assert response_json(me)["email"] == user.email

    logout = handler(
        rest_event(
            "POST",
            "/auth/logout",
            headers={"Cookie": cookie_header, "X-CSRF-Token": csrf_token},
        ),
        LambdaContext(),
    )
    assert logout["statusCode"] == 204
    after = handler(
        rest_event("GET", "/users/me", headers={"Cookie": cookie_header}), LambdaContext()
    )
    assert after["statusCode"] == 401


@pytest.mark.parametrize("build_event", [rest_event, http_api_event])
def test_an_event_posted_through_the_handler_with_an_api_key(
    db: Session, build_event: Callable[..., dict[str, Any]]
) -> None:
    configuration = create_configuration(db, steps=(("only", 2, Decimal("0.7500")),))
    customer = create_customer(db)
    key = create_api_key(db, create_admin(db))
    headers = {"X-API-Key": key}
    created = handler(
        build_event(
            "POST",
            "/jobs",
            headers=headers,
            body={
                "provider_job_id": "lambda-1",
                "tag": configuration.tag,
                "customer_id": customer.id,
            },
        ),
        LambdaContext(),
    )
    assert created["statusCode"] == 201, created["body"]
    job_id = response_json(created)["id"]
    posted = handler(
        build_event(
            "POST",
            f"/jobs/{job_id}/events",
            headers=headers,
            body={"kind": "step", "name": "only", "event_id": "lambda-evt"},
        ),
        LambdaContext(),
    )
    assert posted["statusCode"] == 201, posted["body"]
    job = response_json(posted)["job"]
    assert (job["status"], job["progress"], job["cost"]) == ("completed", 1.0, "0.7500")
