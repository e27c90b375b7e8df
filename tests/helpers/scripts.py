"""Helpers shared by the job and event tests."""

from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import Customer, JobConfiguration, Scope, User
from tests.helpers.factories import (
    create_admin,
    create_api_key,
    create_configuration,
    create_user,
    unique,
)

# A weighted pipeline: points 1 + 2 + 3 + 4 = 10, costs sum to 6.0001.
PIPELINE = (
    ("upload", 1, Decimal("0.1000")),
    ("segment", 2, Decimal("1.5000")),
    ("classify", 3, Decimal("2.2500")),
    ("report", 4, Decimal("2.2501")),
)


class Script:
    """A script with an API key, talking to the API the way a real one would."""

    def __init__(self, client: TestClient, key: str) -> None:
        self.client = client
        self.headers = {"X-API-Key": key}

    def create_job(self, **body: Any) -> Any:
        return self.client.post("/jobs", json=body, headers=self.headers)

    def event(self, job_id: int, **body: Any) -> Any:
        return self.client.post(f"/jobs/{job_id}/events", json=body, headers=self.headers)

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(path, params=params, headers=self.headers)

    def post(self, path: str, body: Any = None) -> Any:
        return self.client.post(path, json=body, headers=self.headers)


def admin_script(
    db: Session, client: TestClient, scopes: tuple[Scope, ...] = (Scope.INGEST, Scope.READ)
) -> Script:
    return Script(client, create_api_key(db, create_admin(db), scopes=scopes))


def client_script(db: Session, client: TestClient, customer: Customer | None = None) -> Script:
    user: User = create_user(db, customer=customer)
    return Script(client, create_api_key(db, user))


def pipeline(db: Session) -> JobConfiguration:
    return create_configuration(db, steps=PIPELINE)


def new_job(script: Script, configuration: JobConfiguration, customer_id: int, **extra: Any) -> Any:
    response = script.create_job(
        provider_job_id=extra.pop("provider_job_id", unique("job")),
        tag=configuration.tag,
        customer_id=customer_id,
        **extra,
    )
    assert response.status_code == 201, response.text
    return response.json()
