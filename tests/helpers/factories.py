"""Small factories for test data: each call makes fresh, unique rows in the test's session."""

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.internal import api_key_format
from app.internal.security import hash_password
from app.models import ApiKey, Customer, Job, JobConfiguration, Role, Scope, User
from app.schemas.job import JobCreate
from app.schemas.job_configuration import JobConfigurationCreate, JobConfigurationStepCreate
from app.services import job_configurations, jobs
from app.services.access import Caller

PASSWORD = "correct horse battery"
_sequence = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_sequence)}"


def create_customer(db: Session, *, name: str | None = None, is_active: bool = True) -> Customer:
    customer = Customer(name=name or unique("Customer"), is_active=is_active)
    db.add(customer)
    db.flush()
    return customer


def create_user(
    db: Session,
    *,
    role: Role = Role.CLIENT,
    customer: Customer | None = None,
    email: str | None = None,
    password: str = PASSWORD,
    is_active: bool = True,
) -> User:
    if role == Role.CLIENT and customer is None:
        customer = create_customer(db)
    user = User(
        email=email or f"{unique('user')}@example.com",
        first_name="Test",
        last_name="User",
        password_hash=hash_password(password),
        role=role,
        customer_id=customer.id if customer is not None else None,
        is_active=is_active,
    )
    db.add(user)
    db.flush()
    return user


def create_admin(db: Session, **kwargs: object) -> User:
    return create_user(db, role=Role.ADMIN, **kwargs)  # type: ignore[arg-type]


def create_api_key(
    db: Session,
    user: User,
    *,
    scopes: tuple[Scope, ...] = (Scope.INGEST, Scope.READ),
    expires_at: datetime | None = None,
) -> str:
    """A key for `user`; answers its plaintext."""
    plaintext = api_key_format.generate_api_key()
    db.add(
        ApiKey(
            user_id=user.id,
            name=unique("key"),
            prefix=api_key_format.display_prefix(plaintext),
            digest=api_key_format.digest(plaintext),
            scopes=list(scopes),
            expires_at=expires_at,
        )
    )
    db.flush()
    return plaintext


DEFAULT_STEPS = (("fetch", 1, Decimal("0.50")), ("analyse", 3, Decimal("2.00")))


def create_configuration(
    db: Session,
    *,
    tag: str | None = None,
    name: str | None = None,
    steps: Sequence[tuple[str, int, Decimal]] = DEFAULT_STEPS,
    **timeouts: int,
) -> JobConfiguration:
    """The current version of a configuration with `steps` as (tag, points, cost), each step
    named after its tag: a new tag makes version 1, a known tag with other steps the next one.
    `timeouts`: start_timeout, step_timeout, job_timeout."""
    tag = tag or unique("config")
    config_in = JobConfigurationCreate(
        tag=tag,
        name=name or f"Configuration {tag}",
        **timeouts,
        steps=[
            JobConfigurationStepCreate(tag=step_tag, name=step_tag, points=points, cost=cost)
            for step_tag, points, cost in steps
        ],
    )
    configuration, _ = job_configurations.create_configuration(db, config_in=config_in)
    return configuration


def create_job(
    db: Session,
    *,
    configuration: JobConfiguration,
    customer: Customer,
    created_at: datetime | None = None,
) -> Job:
    """A pending job of `configuration` for `customer`, made by the jobs service as an admin;
    `created_at` dates it (before any event: their records copy the job's time)."""
    job, _ = jobs.create_job(
        db,
        caller=Caller(create_admin(db)),
        job_in=JobCreate(
            provider_job_id=unique("job"),
            tag=configuration.tag,
            version=configuration.version,
            customer_id=customer.id,
        ),
    )
    if created_at is not None:
        job.created_at = created_at
        db.flush()
    return job


@dataclass
class Login:
    """A logged-in browser: the client keeps the cookies; send `headers` on unsafe requests."""

    user: User
    csrf_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-CSRF-Token": self.csrf_token}


def log_in(client: TestClient, user: User, password: str = PASSWORD) -> Login:
    response = client.post("/auth/login", json={"email": user.email, "password": password})
    assert response.status_code == 200, response.text
    return Login(user=user, csrf_token=response.json()["csrf_token"])


def bearer_token(client: TestClient, user: User, password: str = PASSWORD) -> dict[str, str]:
    response = client.post("/auth/token", data={"username": user.email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}
