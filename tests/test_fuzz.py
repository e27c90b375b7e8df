"""Fuzzing: schemathesis generates requests from the whole OpenAPI document and sends them
through the ASGI app to the test database, with every default check: no 5xx, documented status
codes, content types and bodies, invalid input refused, valid input accepted, auth enforced.

Each test commits a small world for real (the app's own `get_db` commits each request) and the
`committed` fixture empties every table afterwards. `--fuzz-examples N` sets the examples per
operation and the stateful scenarios (`python tasks.py fuzz --max-examples N` passes it on).
"""

from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import BaseSchema, Case, GenerationMode
from sqlalchemy import text

from app.internal.pagination import encode_cursor
from app.main import app
from app.models import Base, EventKind, Role
from app.schemas.event import EventCreate
from app.schemas.job import JobCreate
from app.services import events, jobs
from app.services.access import Caller
from config import config
from tests.factories import (
    PASSWORD,
    create_api_key,
    create_configuration,
    create_customer,
    create_user,
)
from tests.jobs_support import PIPELINE

# Schema-valid input may still be refused with 422 by rules the schema cannot state (an unknown
# tag, `from` after `to`, an invalid cursor, a step event naming no step): the default statuses
# schemathesis expects for valid input, plus that one.
VALID_INPUT_STATUSES = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
IDENTITIES = ["admin-bearer", "admin-api-key", "client-bearer", "client-api-key"]
STATEFUL_STEPS = 6


@dataclass(frozen=True)
class World:
    customer_id: int
    job_id: int
    emails: dict[str, str]
    api_keys: dict[str, str]


def make_world() -> World:
    """Two customers, an admin and a client of the first, a configuration and a job with an
    event, committed as real requests would find them."""
    with config.database.SessionLocal() as session:
        customer = create_customer(session)
        create_customer(session)
        users = {
            "admin": create_user(session, role=Role.ADMIN),
            "client": create_user(session, customer=customer),
        }
        configuration = create_configuration(session, tag="pipeline", steps=PIPELINE)
        admin = Caller(user=users["admin"])
        job, _ = jobs.create_job(
            session,
            caller=admin,
            job_in=JobCreate(
                provider_job_id="job-1", tag=configuration.tag, customer_id=customer.id
            ),
        )
        events.record_event(
            session,
            caller=admin,
            job_id=job.id,
            event_in=EventCreate(kind=EventKind.STEP, name=PIPELINE[0][0]),
        )
        world = World(
            customer_id=customer.id,
            job_id=job.id,
            emails={role: user.email for role, user in users.items()},
            api_keys={role: create_api_key(session, user) for role, user in users.items()},
        )
        session.commit()
    return world


@pytest.fixture
def world(committed: None) -> World:
    return make_world()


def bearer(world: World, role: str) -> dict[str, str]:
    response = TestClient(app).post(
        "/auth/token", data={"username": world.emails[role], "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def credentials(world: World, identity: str) -> dict[str, Any]:
    """Schemathesis settings that authenticate every request as `identity` (`admin-bearer`,
    `client-api-key`, ...)."""
    role, _, way = identity.partition("-")
    if way == "api-key":
        return {"auth": {"openapi": {"ApiKey": {"api_key": world.api_keys[role]}}}}
    # A header, not OpenAPI-aware auth: schemathesis sees no credential in an OAuth2 scheme.
    return {"headers": bearer(world, role)}


TABLES = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)


def empty_database() -> None:
    with config.database.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))


def load_schema(settings: dict[str, Any]) -> BaseSchema:
    checks = {"positive_data_acceptance": {"expected-statuses": VALID_INPUT_STATUSES}}
    fuzz_config = schemathesis.Config.from_dict({"checks": checks, **settings})
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=fuzz_config)


def fuzz_settings(request: pytest.FixtureRequest, **overrides: Any) -> settings:
    return settings(
        max_examples=request.config.getoption("--fuzz-examples"),
        deadline=None,
        database=None,  # every operation shares the inner test's key: replays would mix them
        suppress_health_check=list(HealthCheck),
        **overrides,
    )


OPERATIONS = [
    operation.label for methods in load_schema({}).values() for operation in methods.values()
]


@pytest.mark.parametrize("identity", IDENTITIES)
@pytest.mark.parametrize("label", OPERATIONS)
def test_fuzz(request: pytest.FixtureRequest, world: World, label: str, identity: str) -> None:
    operation = load_schema(credentials(world, identity)).find_operation_by_label(label)
    assert operation is not None
    cases = st.one_of([operation.as_strategy(generation_mode=mode) for mode in GenerationMode])

    @fuzz_settings(request)
    @given(case=cases)
    def fuzz(case: Case[Any]) -> None:
        case.call_and_validate()

    fuzz()


# What the fuzzing found (a 500, or an answer the document does not describe), and what the same
# causes broke where generated requests do not reach (batch items, cursors), as fixed cases.
FIXED = [
    pytest.param("POST", "/customers", {"json": {"name": "a\x00"}}, 422, id="NUL in a name"),
    pytest.param("GET", "/users", {"params": {"q": "a\x00"}}, 422, id="NUL in a search"),
    pytest.param(
        "POST",
        "/auth/token",
        {"data": {"username": "a\x00@example.com", "password": "x"}},
        401,
        id="NUL in a login",
    ),
    pytest.param(
        "POST",
        "/jobs/{job_id}/events",
        {"json": {"kind": "info", "metadata": {"note": "a\x00"}}},
        422,
        id="NUL in metadata",
    ),
    pytest.param(
        "GET",
        "/jobs",
        {"params": {"created_before": "0638-07-11T13:56:12+22:37"}},
        200,
        id="an offset PostgreSQL refuses",
    ),
    pytest.param(
        "GET", "/jobs", {"params": {"created_after": "14"}}, 422, id="a number for a time"
    ),
    pytest.param(
        "GET",
        "/analytics/jobs",
        {"params": {"from": "0001-01-01T00:00:00+00:01", "to": "0001-01-01T00:01:00Z"}},
        422,
        id="a time before year 1 in UTC",
    ),
    pytest.param(
        "GET",
        "/analytics/jobs",
        {"params": {"from": "9999-12-01T00:00:00Z", "to": "9999-12-31T00:00:00Z"}},
        422,
        id="a period ending after 9999",
    ),
    pytest.param(
        "GET", "/users/me", {"headers": {"X-API-Key": ""}}, 401, id="an empty API key and a token"
    ),
    pytest.param(
        "PATCH",
        "/users/me",
        {"content": b"\xff", "headers": {"Content-Type": "application/json"}},
        400,
        id="a body that is not UTF-8",
    ),
    pytest.param(
        "POST",
        "/events/batch",
        {"json": {"events": [{"kind": "info", "provider_job_id": "a\x00"}]}},
        200,
        id="NUL in a batch item",
    ),
    pytest.param(
        "GET",
        "/job-configurations",
        {"params": {"cursor": encode_cursor(["a\x00"])}},
        422,
        id="NUL in a cursor",
    ),
    pytest.param(
        "GET",
        "/jobs",
        {"params": {"cursor": encode_cursor(["0638-07-11 13:56:12+22:37", 1])}},
        200,
        id="an offset PostgreSQL refuses in a cursor",
    ),
    pytest.param(
        "GET",
        "/jobs",
        {"params": {"sort": "progress", "cursor": encode_cursor(["1e-999999", 1])}},
        422,
        id="a number PostgreSQL refuses in a cursor",
    ),
    pytest.param(
        "GET",
        "/jobs",
        {"params": {"sort": "progress", "cursor": encode_cursor(["abc", 1])}},
        422,
        id="no number in a cursor",
    ),
]


@pytest.mark.parametrize(("method", "path", "arguments", "status"), FIXED)
def test_fixed_failures(
    world: World, method: str, path: str, arguments: dict[str, Any], status: int
) -> None:
    """Each answers a documented status with a documented body."""
    headers = {**bearer(world, "admin"), **arguments.pop("headers", {})}
    response = TestClient(app).request(
        method, path.format(job_id=world.job_id), headers=headers, **arguments
    )
    assert response.status_code == status, response.text
    load_schema({})[path][method].validate_response(response)


def test_stateful(request: pytest.FixtureRequest, world: World) -> None:
    """Scenarios that follow the OpenAPI links of the document, and no inferred ones: a
    configuration, then a job of it for the world's customer, then its events, each read back
    with what the API answered."""
    schema = load_schema(
        {
            # The bearer token is the scenario's; no API key of its own next to it.
            "generation": {"with-security-parameters": False},
            "phases": {
                "stateful": {
                    "inference": {"algorithms": []},
                    "generation": {"mode": "positive"},
                }
            },
            "operations": [
                {
                    "include-name": "POST /jobs",
                    "parameters": {"body.customer_id": world.customer_id},
                }
            ],
        }
    ).include(path_regex="^/(job-configurations|jobs)(/|$)")

    class Scenarios(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            # Hypothesis requires the same steps to meet the same answers (which steps it can
            # take next depends on them), so every scenario starts from the same database.
            empty_database()
            self.headers = bearer(make_world(), "admin")

        def get_call_kwargs(self, case: Case[Any]) -> dict[str, Any]:
            return {"headers": self.headers}

    Scenarios.run(
        settings=fuzz_settings(request, stateful_step_count=STATEFUL_STEPS, phases=[Phase.generate])
    )
