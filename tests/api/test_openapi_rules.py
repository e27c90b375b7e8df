"""The OpenAPI document states the rules the server enforces: for each rule, the document's
schema and the server agree on what is valid, case by case."""

import re
from typing import Any

import jsonschema_rs
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.internal.periods import YEARS
from app.main import app
from app.schemas.billing import YEAR_MONTH_PATTERN
from tests.helpers.factories import (
    PASSWORD,
    bearer_token,
    create_admin,
    create_customer,
    create_user,
)
from tests.helpers.scripts import PIPELINE, admin_script, new_job, pipeline

DOCUMENT = app.openapi()


def valid(component: str, instance: Any) -> bool:
    schema = {"$ref": f"#/components/schemas/{component}", "components": DOCUMENT["components"]}
    return bool(jsonschema_rs.validator_for(schema).is_valid(instance))


def accepted(status: int) -> bool:
    assert status in {200, 201, 422}, status
    return status != 422


@pytest.mark.parametrize(
    ("scopes", "ok"), [(["read"], True), (["read", "ingest"], True), (["read", "read"], False)]
)
def test_scopes_are_unique(db: Session, client: TestClient, scopes: list[str], ok: bool) -> None:
    body = {"name": "key", "scopes": scopes}
    assert valid("ApiKeyCreate", body) is ok
    response = client.post("/api-keys", json=body, headers=bearer_token(client, create_user(db)))
    assert accepted(response.status_code) is ok


NEW = "a new long password"


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        ({"new_password": NEW}, False),
        ({"new_password": NEW, "current_password": ""}, False),
        ({"new_password": NEW, "current_password": None}, False),
        ({"new_password": NEW, "current_password": PASSWORD}, True),
        ({"new_password": None}, True),
        ({"current_password": "anything"}, True),
        ({"first_name": "Ada"}, True),
    ],
)
def test_a_new_password_needs_the_current_one(
    db: Session, client: TestClient, body: dict[str, Any], ok: bool
) -> None:
    assert valid("UserUpdateMe", body) is ok
    response = client.patch("/users/me", json=body, headers=bearer_token(client, create_user(db)))
    assert accepted(response.status_code) is ok


@pytest.mark.parametrize(
    ("cost", "ok"),
    [
        (99999999999999, True),
        (99999999999999.98, True),
        (1e14, False),
        (100000000000000, False),
        ("99999999999999.9999", True),
        ("100000000000000", False),
    ],
)
def test_a_numeric_cost_has_the_string_s_bound(
    db: Session, client: TestClient, cost: float | str, ok: bool
) -> None:
    step = {"tag": "only", "name": "Only", "points": 1, "cost": cost}
    assert valid("JobConfigurationStepCreate", step) is ok
    response = client.post(
        "/job-configurations",
        json={"tag": "costly", "name": "Costly", "steps": [step]},
        headers=bearer_token(client, create_admin(db)),
    )
    assert accepted(response.status_code) is ok


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        ({"kind": "step"}, False),
        ({"kind": "step", "name": None}, False),
        ({"kind": "step", "name": PIPELINE[0][0]}, True),
        ({"kind": "info"}, True),
        ({"kind": "error"}, True),
    ],
)
def test_a_step_event_names_its_step(
    db: Session, client: TestClient, body: dict[str, Any], ok: bool
) -> None:
    assert valid("EventCreate", body) is ok
    script = admin_script(db, client)
    job = new_job(script, pipeline(db), create_customer(db).id)
    response = script.event(job["id"], **body)
    assert accepted(response.status_code) is ok


@pytest.mark.parametrize(
    ("period", "ok"),
    [
        ("1969-12", False),
        ("1970-01", True),
        ("2026-11", True),
        ("9998-12", True),
        ("9999-01", False),
    ],
)
def test_an_invoice_period_is_within_the_years(
    db: Session, client: TestClient, period: str, ok: bool
) -> None:
    [parameter] = [
        parameter
        for parameter in DOCUMENT["paths"]["/billing/invoice"]["get"]["parameters"]
        if parameter["name"] == "period"
    ]
    assert bool(re.fullmatch(parameter["schema"]["pattern"], period)) is ok
    admin = create_admin(db)
    response = client.get(
        "/billing/invoice",
        params={"period": period, "customer_id": admin.id},
        headers=bearer_token(client, admin),
    )
    # A valid period for a customer that does not exist: 404, past validation.
    assert (response.status_code != 422) is ok, response.text


def test_the_period_pattern_is_the_years_rule() -> None:
    for year in range(10000):
        matches = re.fullmatch(YEAR_MONTH_PATTERN, f"{year:04d}-06") is not None
        assert matches is (year in YEARS), year


def test_rules_json_schema_cannot_state_are_described() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    metadata = schemas["EventCreate"]["properties"]["metadata"]["description"]
    assert "NUL" in metadata
    assert "16384 bytes" in metadata
    assert "10 levels" in metadata
    for path in ("/billing/usage", "/analytics/jobs", "/analytics/steps", "/analytics/customers"):
        for parameter in DOCUMENT["paths"][path]["get"]["parameters"]:
            if parameter["name"] in {"from", "to"}:
                assert "Years 1970 to 9998" in parameter["description"], (path, parameter)
