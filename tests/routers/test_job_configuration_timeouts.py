"""A configuration version's timeouts: validated ranges, part of its content (a change makes a
new version), carried by the file format."""

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import JobConfiguration
from tests.helpers.factories import bearer_token, create_admin, unique

URL = "/job-configurations"
STEPS = [{"tag": "fetch", "name": "Fetch", "points": 1, "cost": "0.5"}]


@pytest.fixture
def headers(db: Session, client: TestClient) -> dict[str, str]:
    return bearer_token(client, create_admin(db))


def body(tag: str, **timeouts: Any) -> dict[str, Any]:
    return {"tag": tag, "name": "Timed", "steps": STEPS, **timeouts}


@pytest.mark.parametrize(
    ("timeouts", "field", "message"),
    [
        ({"start_timeout": 0}, "start_timeout", "greater than or equal to 1"),
        ({"step_timeout": 2_592_001}, "step_timeout", "less than or equal to 2592000"),
        ({"job_timeout": 31_536_001}, "job_timeout", "less than or equal to 31536000"),
        ({"step_timeout": "60"}, "step_timeout", "valid integer"),
        ({"job_timeout": 1.5}, "job_timeout", "valid integer"),
    ],
)
def test_timeouts_out_of_range_are_refused_and_store_nothing(
    db: Session,
    client: TestClient,
    headers: dict[str, str],
    timeouts: dict[str, Any],
    field: str,
    message: str,
) -> None:
    tag = unique("timed")
    response = client.post(URL, json=body(tag, **timeouts), headers=headers)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"][-1] == field
    assert message in error["msg"]
    count = select(func.count()).select_from(JobConfiguration).where(JobConfiguration.tag == tag)
    assert db.scalar(count) == 0


def test_timeouts_are_shown_and_a_changed_timeout_is_a_new_version(
    client: TestClient, headers: dict[str, str]
) -> None:
    tag = unique("timed")
    timeouts = {"start_timeout": 600, "step_timeout": 120, "job_timeout": 86_400}
    first = client.post(URL, json=body(tag, **timeouts), headers=headers)
    assert first.status_code == 201, first.text
    assert {name: first.json()[name] for name in timeouts} == timeouts
    assert client.post(URL, json=body(tag, **timeouts), headers=headers).status_code == 200
    changed = client.post(URL, json=body(tag, **{**timeouts, "step_timeout": 180}), headers=headers)
    assert (changed.status_code, changed.json()["version"]) == (201, 2)


def test_the_file_format_carries_timeouts(client: TestClient, headers: dict[str, str]) -> None:
    tag = unique("timed")
    entry = {"tag": tag, "name": "Timed", "step_configurations": STEPS, "step_timeout": 90}
    response = client.put(URL, json={"job_configs": [entry]}, headers=headers)
    assert response.status_code == 200, response.text
    assert client.get(f"{URL}/{tag}", headers=headers).json()["step_timeout"] == 90
