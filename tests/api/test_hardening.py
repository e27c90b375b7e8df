"""Bounded requests, safe headers, CORS, docs switch and dependency hygiene."""

import importlib.metadata
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import Customer, User
from config import config
from root import root_path
from tests.helpers.factories import (
    bearer_token,
    create_admin,
    create_configuration,
    create_customer,
    create_user,
    log_in,
    unique,
)
from tests.helpers.processes import run_python
from tests.helpers.scripts import admin_script, new_job


def test_a_body_over_the_limit_is_413_before_it_is_read(client: TestClient) -> None:
    limit = config.settings.max_request_bytes
    response = client.post(
        "/events/batch",
        content=b"x" * (limit + 1),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def test_a_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    limit = config.settings.max_request_bytes

    def chunks() -> Iterator[bytes]:
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    response = client.post(
        "/auth/login", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["x-request-id"]


def test_a_body_under_the_limit_is_read(client: TestClient) -> None:
    response = client.post("/auth/login", content=json.dumps({"email": "a@b.example"}))
    assert response.status_code == 422


def test_responses_are_not_sniffed_or_cached(db: Session, client: TestClient) -> None:
    log_in(client, create_user(db))
    for response in (client.get("/health"), client.get("/users/me"), client.get("/nowhere")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"


def test_cors_answers_only_configured_origins() -> None:
    snippet = (
        "from fastapi.testclient import TestClient\n"
        "from app.main import app\n"
        "client = TestClient(app)\n"
        "for origin in ('https://app.example', 'https://evil.example'):\n"
        "    response = client.options('/users/me', headers={'Origin': origin,"
        " 'Access-Control-Request-Method': 'GET'})\n"
        "    print(origin, response.status_code,"
        " response.headers.get('access-control-allow-origin'),"
        " response.headers.get('access-control-allow-credentials'))\n"
    )
    result = run_python("-c", snippet, env={"CORS_ORIGINS": "https://app.example"})
    assert result.returncode == 0, result.stderr
    assert "https://app.example 200 https://app.example true" in result.stdout
    # A foreign origin gets no Access-Control-Allow-Origin: the browser refuses the answer.
    assert "https://evil.example 400 None" in result.stdout


def test_the_docs_can_be_turned_off() -> None:
    snippet = "from app.main import app\nprint(app.docs_url, app.redoc_url, app.openapi_url)\n"
    result = run_python("-c", snippet, env={"DOCS_ENABLED": "false"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "None", "None"]


@pytest.mark.parametrize("package", ["python-jose", "passlib", "ecdsa"])
def test_ruled_out_packages_are_not_installed(package: str) -> None:
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution(package)


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-dev.txt"])
def test_every_requirement_is_pinned(name: str) -> None:
    lines = [
        line.split("#")[0].strip()
        for line in root_path(name).read_text().splitlines()
        # -r includes a pinned file; -e ./ installs this repository's own client package.
        if line.strip() and not line.lstrip().startswith(("#", "-r ", "-e ./"))
    ]
    assert lines
    unpinned = [line for line in lines if "==" not in line]
    assert unpinned == []


# JSON numbers and booleans are taken as the schema types them: pydantic alone would read `true`
# as 1, "2" or 2.0 as 2, and 1 or "true" as true.
LOOSE_TYPES = [
    ("POST", "/users", {"customer_id": True}, "customer_id"),
    ("PATCH", "/users/{user}", {"customer_id": "1"}, "customer_id"),
    ("PATCH", "/users/{user}", {"is_active": 1}, "is_active"),
    ("PATCH", "/customers/{customer}", {"is_active": "true"}, "is_active"),
    ("POST", "/jobs", {"version": 1.0}, "version"),
    ("POST", "/jobs", {"customer_id": True}, "customer_id"),
    ("POST", "/job-configurations", {"points": True}, "points"),
]


@pytest.mark.parametrize(("method", "path", "loose", "field"), LOOSE_TYPES)
def test_numbers_and_booleans_are_not_guessed_from_other_types(
    db: Session, client: TestClient, method: str, path: str, loose: dict[str, Any], field: str
) -> None:
    admin, customer = create_admin(db), create_customer(db)
    user = create_user(db, customer=customer)
    configuration = create_configuration(db)
    valid: dict[str, dict[str, Any]] = {
        "/users": {"email": f"{unique('loose')}@example.com", "first_name": "A", "last_name": "B",
                   "password": "a-long-password", "role": "client", "customer_id": customer.id},
        "/users/{user}": {},
        "/customers/{customer}": {},
        "/jobs": {"provider_job_id": unique("loose"), "tag": configuration.tag,
                  "customer_id": customer.id},
        "/job-configurations": {"tag": unique("loose"), "name": "Loose", "steps": [
            {"tag": "only", "name": "Only", "points": 1, "cost": "0.5"}]},
    }  # fmt: skip
    body = valid[path]
    if path == "/job-configurations":
        body["steps"][0].update(loose)
    else:
        body.update(loose)
    url = path.format(user=user.id, customer=customer.id)
    response = client.request(method, url, json=body, headers=bearer_token(client, admin))
    assert response.status_code == 422, response.text
    assert field in response.text
    db.expire_all()
    assert db.get_one(User, user.id).customer_id == customer.id
    assert db.get_one(Customer, customer.id).is_active


def test_a_batch_item_with_a_loose_job_id_is_rejected_alone(
    db: Session, client: TestClient
) -> None:
    script = admin_script(db, client)
    customer = create_customer(db)
    configuration = create_configuration(db, steps=[("only", 1, Decimal("0.5"))])
    job = new_job(script, configuration, customer.id)
    step = "only"
    answer = script.post(
        "/events/batch",
        {"events": [{"job_id": True, "kind": "step", "name": step},
                    {"job_id": job["id"], "kind": "step", "name": step}]},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    first, second = answer.json()["results"]
    assert first["result"] == "rejected"
    assert "job_id" in first["reason"]
    assert second["result"] == "created"
