"""Events for one job arriving at the same moment on separate connections (as from several Lambda
instances) come out exactly as if they had arrived one by one. These tests commit for real."""

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.main import app
from app.models import Event, Job, JobStepCompletion
from config import config
from tests.helpers.factories import (
    create_admin,
    create_api_key,
    create_configuration,
    create_customer,
)

pytestmark = pytest.mark.usefixtures("committed")

THREADS = 8
STEPS = tuple((f"s{index:02d}", index, Decimal(f"{index}.0125")) for index in range(1, 21))


def committed_job() -> tuple[int, str]:
    with config.database.SessionLocal() as session:
        configuration = create_configuration(session, steps=STEPS)
        customer = create_customer(session)
        key = create_api_key(session, create_admin(session))
        session.commit()
    with TestClient(app, base_url="https://testserver") as client:
        job = client.post(
            "/jobs",
            json={
                "provider_job_id": "race-1",
                "tag": configuration.tag,
                "customer_id": customer.id,
            },
            headers={"X-API-Key": key},
        )
    assert job.status_code == 201, job.text
    return job.json()["id"], key


def post_all(
    key: str, job_id: int, bodies: list[dict[str, Any]], barrier: threading.Barrier
) -> list[int]:
    statuses = []
    with TestClient(app, base_url="https://testserver", headers={"X-API-Key": key}) as client:
        barrier.wait()
        for body in bodies:
            statuses.append(client.post(f"/jobs/{job_id}/events", json=body).status_code)
    return statuses


def test_concurrent_events_for_one_job_come_out_exact() -> None:
    job_id, key = committed_job()
    # Every thread completes every step (with its own event ids) and retries the shared ones:
    # 20 steps x 8 threads step events, plus 8 replays of one shared event id each.
    per_thread = [
        [{"kind": "step", "name": tag, "event_id": f"t{thread}-{tag}"} for tag, _, _ in STEPS]
        + [{"kind": "error", "name": "s05", "event_id": "shared-error"}]
        + [{"kind": "info", "event_id": "shared-info"}]
        for thread in range(THREADS)
    ]
    barrier = threading.Barrier(THREADS)
    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda bodies: post_all(key, job_id, bodies, barrier), per_thread))
    statuses = [status for thread in results for status in thread]
    assert set(statuses) <= {200, 201}
    assert statuses.count(201) == THREADS * len(STEPS) + 2

    with config.database.SessionLocal() as session:
        job = session.get_one(Job, job_id)
        events = session.scalar(select(func.count()).where(Event.job_id == job_id))
        completions = session.scalar(select(func.count()).where(JobStepCompletion.job_id == job_id))
    assert events == THREADS * len(STEPS) + 2
    assert completions == len(STEPS)
    assert (job.steps_completed, job.completed_points) == (
        20,
        sum(points for _, points, _ in STEPS),
    )
    assert job.cost == sum(cost for _, _, cost in STEPS)
    assert job.event_count == events
    assert job.error_count == 1
    # The shared error arrived at some point among the step events for s05; whether it is
    # resolved depends on whether a later s05 step event followed it, which is what the
    # counters must say consistently.
    with config.database.SessionLocal() as session:
        open_errors = session.scalar(
            select(func.count()).where(
                Event.job_id == job_id, Event.kind == "error", Event.resolved_at.is_(None)
            )
        )
    assert job.unresolved_error_count == open_errors
    assert job.status == ("failed" if open_errors else "completed")


def test_concurrent_creates_of_one_job_make_one_job() -> None:
    with config.database.SessionLocal() as session:
        configuration = create_configuration(session, steps=STEPS[:2])
        customer = create_customer(session)
        key = create_api_key(session, create_admin(session))
        session.commit()
    body = {"provider_job_id": "twin", "tag": configuration.tag, "customer_id": customer.id}
    barrier = threading.Barrier(THREADS)

    def create(_: int) -> tuple[int, int]:
        with TestClient(app, base_url="https://testserver", headers={"X-API-Key": key}) as client:
            barrier.wait()
            response = client.post("/jobs", json=body)
            return response.status_code, response.json()["id"]

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(create, range(THREADS)))
    assert sorted(status for status, _ in outcomes) == [200] * (THREADS - 1) + [201]
    assert len({job_id for _, job_id in outcomes}) == 1
