"""A database outage, for real: the app's own throwaway PostgreSQL is stopped and started again
under it. Every request that needs the database answers 503 (never 500) while it is down, the
same engine recovers when it is back, and events retried with their event_id are stored exactly
once, so nothing acknowledged is lost and nothing is counted twice."""

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

from app.main import app
from app.models import Event, Job, JobStatus, JobStepCompletion
from config import config
from config.database import Database
from tests.helpers.app import requests_on
from tests.helpers.capture import captured_records
from tests.helpers.databases import ThrowawayServer, throwaway_server
from tests.helpers.factories import (
    PASSWORD,
    create_admin,
    create_api_key,
    create_configuration,
    create_customer,
)
from tests.helpers.processes import database_env, run_python

STEPS = tuple((f"s{index}", index, Decimal(f"{index}.0125")) for index in range(1, 7))
UNAVAILABLE = {"status": "unavailable", "database": "unreachable"}
# Generous bounds for a loaded machine: they stop a broken run, they time nothing.
WAIT_S = 60.0
INGESTION_S = 120.0
MAX_ATTEMPTS = 100


@dataclass
class Outage:
    server: ThrowawayServer
    url: URL


@pytest.fixture(scope="module")
def outage_server() -> Iterator[Outage]:
    """A throwaway server with a migrated database; shared by this module's tests."""
    with throwaway_server() as server:
        url = server.create_database("tracker_outage")
        migrated = run_python("-m", "alembic", "upgrade", "head", env=database_env(url))
        assert migrated.returncode == 0, migrated.stderr
        yield Outage(server, url)


@pytest.fixture
def outage(outage_server: Outage) -> Outage:
    outage_server.server.start()  # in case a failed test left it stopped
    return outage_server


@pytest.fixture
def database(request: pytest.FixtureRequest, outage: Outage) -> Iterator[Database]:
    """One Database (engine and pool) for the whole test, set up as the app's own is (or as on
    Lambda, with `lambda` as the parameter); the app's requests use it."""
    settings = config.settings
    database = Database(
        outage.url,
        lambda_mode=getattr(request, "param", None) == "lambda",
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        statement_timeout_ms=settings.db_statement_timeout_ms,
        connect_timeout_s=settings.db_connect_timeout_s,
    )

    try:
        with requests_on(database):
            yield database
    finally:
        database.dispose()


def api_client(**kwargs: Any) -> TestClient:
    # A server error comes back as the 500 a real client would get, so that it fails the checks.
    return TestClient(app, base_url="https://testserver", raise_server_exceptions=False, **kwargs)


@dataclass
class Seeded:
    key: str
    admin_email: str
    job_ids: list[int]


def seed(database: Database, *, jobs: int) -> Seeded:
    with database.SessionLocal() as session:
        configuration = create_configuration(session, steps=STEPS)
        customer = create_customer(session)
        admin = create_admin(session)
        key = create_api_key(session, admin)
        session.commit()
    job_ids = []
    with api_client(headers={"X-API-Key": key}) as client:
        for number in range(jobs):
            body = {
                "provider_job_id": f"outage-{configuration.tag}-{number}",
                "tag": configuration.tag,
                "customer_id": customer.id,
            }
            response = client.post("/jobs", json=body)
            assert response.status_code == 201, response.text
            job_ids.append(response.json()["id"])
    return Seeded(key, admin.email, job_ids)


def stored_event_ids(database: Database, job_id: int) -> Counter[str | None]:
    """How many times each event_id is stored for the job."""
    with database.SessionLocal() as session:
        return Counter(session.scalars(select(Event.event_id).where(Event.job_id == job_id)))


def assert_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"]
    assert "unavailable" in response.json()["detail"]


@pytest.mark.parametrize("database", ["pooled", "lambda"], indirect=True)
def test_requests_answer_503_during_an_outage_and_the_same_engine_recovers(
    outage: Outage, database: Database
) -> None:
    seeded = seed(database, jobs=1)
    [job_id] = seeded.job_ids

    def stop_server(*args: object) -> None:
        outage.server.stop()

    events = f"/jobs/{job_id}/events"
    with api_client(headers={"X-API-Key": seeded.key}) as client:
        assert client.get("/health").json() == {"status": "ok", "database": "ok"}
        assert client.post(events, json={"kind": "step", "name": "s1", "event_id": "e1"}).is_success

        outage.server.stop()
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json() == UNAVAILABLE
        with captured_records("tracker.errors") as records:
            assert_unavailable(client.get("/jobs"))
        # Logged with the error's traceback, for the operator.
        assert [record.exc_info[0] for record in records if record.exc_info] == [OperationalError]
        assert_unavailable(client.get(f"/jobs/{job_id}"))
        assert_unavailable(
            client.post(events, json={"kind": "step", "name": "s2", "event_id": "e2"})
        )
        assert_unavailable(
            client.post("/auth/login", json={"email": seeded.admin_email, "password": PASSWORD})
        )

        outage.server.start()
        assert client.get("/health").json() == {"status": "ok", "database": "ok"}
        retried = client.post(events, json={"kind": "step", "name": "s2", "event_id": "e2"})
        assert retried.status_code == 201, retried.text
        assert client.get("/jobs").status_code == 200
        login = client.post("/auth/login", json={"email": seeded.admin_email, "password": PASSWORD})
        assert login.status_code == 200, login.text

        # A restart between two requests: the pooled connections died with the old server, and
        # no request may be the one to find that out.
        outage.server.stop()
        outage.server.start()
        assert client.get("/health").json() == {"status": "ok", "database": "ok"}
        assert client.get(f"/jobs/{job_id}").status_code == 200

        # The connection dies after the work is done, before COMMIT: the commit fails, so the
        # answer is 503 and nothing is stored; the retry stores the event once.
        event.listen(database.SessionLocal, "before_commit", stop_server, once=True)
        lost = client.post(events, json={"kind": "step", "name": "s3", "event_id": "e3"})
        assert_unavailable(lost)
        outage.server.start()
        # The connection dies right after the health check's query: still the health answer.
        event.listen(database.engine, "after_cursor_execute", stop_server, once=True)
        health = client.get("/health")
        assert (health.status_code, health.json()) == (503, UNAVAILABLE)
        outage.server.start()
        retried = client.post(events, json={"kind": "step", "name": "s3", "event_id": "e3"})
        assert retried.status_code == 201, retried.text
        assert retried.json()["job"]["event_count"] == 3

    assert stored_event_ids(database, job_id) == Counter(["e1", "e2", "e3"])


@dataclass
class Ingestion:
    """What the posting threads saw, and the signals between them and the test's restart."""

    total: int
    deadline: float = field(default_factory=lambda: time.monotonic() + INGESTION_S)
    stopping: threading.Event = field(default_factory=threading.Event)
    restarted: threading.Event = field(default_factory=threading.Event)
    statuses: dict[str, list[int]] = field(default_factory=dict)
    acknowledged: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def time_left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def record(self, event_id: str, status: int) -> None:
        with self.lock:
            self.statuses.setdefault(event_id, []).append(status)
            if status < 300:
                self.acknowledged += 1
            else:
                self.failed += 1


def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def post_until_stored(
    key: str, posts: list[tuple[int, dict[str, Any]]], ingestion: Ingestion
) -> None:
    """Post each event; one that fails is retried with its event_id after the restart until it
    is acknowledged. The second half waits for the outage to begin, so it meets the outage."""
    with api_client(headers={"X-API-Key": key}) as client:
        for index, (job_id, body) in enumerate(posts):
            if index == len(posts) // 2:
                ingestion.stopping.wait(ingestion.time_left())
            for attempt in range(MAX_ATTEMPTS):
                if not ingestion.time_left():
                    return
                if attempt:
                    ingestion.restarted.wait(ingestion.time_left())
                    time.sleep(0.05)
                status = client.post(f"/jobs/{job_id}/events", json=body).status_code
                ingestion.record(body["event_id"], status)
                if status < 300:
                    break


def test_events_acknowledged_around_a_restart_are_stored_exactly_once(
    outage: Outage, database: Database
) -> None:
    threads, jobs = 8, 6
    seeded = seed(database, jobs=jobs)
    # Every job gets each step twice (a step completed twice counts once) and some notes; the
    # last job never gets its last step, so it stays running.
    bodies: dict[int, list[dict[str, Any]]] = {}
    for job_id in seeded.job_ids:
        steps = STEPS if job_id != seeded.job_ids[-1] else STEPS[:-1]
        bodies[job_id] = [
            {"kind": "step", "name": tag, "event_id": f"{job_id}-{tag}-{copy}"}
            for tag, _, _ in steps
            for copy in (1, 2)
        ] + [{"kind": "info", "event_id": f"{job_id}-note-{note}"} for note in range(8)]
    posts = [(job_id, body) for job_id, job_bodies in bodies.items() for body in job_bodies]
    random.Random(7).shuffle(posts)
    per_thread = [posts[thread::threads] for thread in range(threads)]
    ingestion = Ingestion(total=len(posts))

    with ThreadPoolExecutor(threads) as pool:
        futures = [
            pool.submit(post_until_stored, seeded.key, thread_posts, ingestion)
            for thread_posts in per_thread
        ]
        try:
            # Stop while events are in flight, and start again once requests have met the outage.
            wait_for(lambda: ingestion.acknowledged >= ingestion.total // 4, WAIT_S)
            ingestion.stopping.set()
            outage.server.stop()
            wait_for(lambda: ingestion.failed > 0, WAIT_S)
            time.sleep(0.2)
            outage.server.start()
        finally:
            ingestion.stopping.set()
            ingestion.restarted.set()
        for future in futures:
            future.result()

    answers = ingestion.statuses
    assert answers.keys() == {body["event_id"] for _, body in posts}
    assert ingestion.failed > 0, "no request met the outage"
    assert {status for statuses in answers.values() for status in statuses} <= {200, 201, 503}
    unacknowledged = [event_id for event_id, statuses in answers.items() if statuses[-1] >= 300]
    assert unacknowledged == []

    with database.SessionLocal() as session:
        for job_id, job_bodies in bodies.items():
            expected_ids = Counter(body["event_id"] for body in job_bodies)
            assert stored_event_ids(database, job_id) == expected_ids
            completed = {body["name"] for body in job_bodies if body["kind"] == "step"}
            job = session.get_one(Job, job_id)
            completions = session.scalar(
                select(func.count()).where(JobStepCompletion.job_id == job_id)
            )
            assert (job.event_count, job.steps_completed, completions) == (
                len(job_bodies),
                len(completed),
                len(completed),
            )
            assert job.completed_points == sum(p for tag, p, _ in STEPS if tag in completed)
            assert job.cost == sum(cost for tag, _, cost in STEPS if tag in completed)
            expected = JobStatus.COMPLETED if len(completed) == len(STEPS) else JobStatus.RUNNING
            assert job.status == expected
