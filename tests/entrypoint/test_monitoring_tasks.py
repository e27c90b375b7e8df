"""The Lambda entry point with real EventBridge Scheduler events, and `python tasks.py tasks:run`,
run the deadline sweep and the webhook delivery: a job gone quiet past its step timeout is
stalled, and its notification reaches a real receiver, signed. These tests commit for real."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from app.main import handler
from app.models import EventKind, Job, JobStatus, WebhookEventType
from app.schemas.event import EventCreate
from app.schemas.job import JobCreate
from app.schemas.webhook import WebhookCreate
from app.services import job_contract, webhooks
from app.services.access import Caller
from app.services.jobs import create_job
from config import config
from tests.helpers.factories import create_admin, create_configuration, create_customer
from tests.helpers.lambda_events import LambdaContext, scheduler_event
from tests.helpers.processes import run_python
from tests.helpers.webhook_receiver import Receiver

pytestmark = pytest.mark.usefixtures("committed")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


def quiet_job(receiver: Receiver) -> tuple[int, str]:
    """A committed job whose only event came 5 minutes ago, past its 60 s step timeout, and an
    endpoint for every customer's stalled jobs at the receiver; answers the job and the secret."""
    with config.database.SessionLocal() as session:
        admin = Caller(user=create_admin(session))
        customer = create_customer(session)
        configuration = create_configuration(
            session, steps=(("a", 1, Decimal("1")), ("b", 1, Decimal("1"))), step_timeout=60
        )
        _, secret = webhooks.create_webhook(
            session,
            caller=admin,
            webhook_in=WebhookCreate(url=receiver.url, event_types=[WebhookEventType.JOB_STALLED]),
        )
        job, _ = create_job(
            session,
            caller=admin,
            job_in=JobCreate(
                provider_job_id="quiet-1", tag=configuration.tag, customer_id=customer.id
            ),
        )
        job_contract.apply_events(
            session,
            [
                job_contract.EventToApply(
                    EventCreate(kind=EventKind.STEP, name="a"),
                    job_id=job.id,
                    received_at=datetime.now(UTC) - timedelta(minutes=5),
                )
            ],
            visible_customer_id=None,
        )
        job_id = job.id
        session.commit()
    return job_id, secret


def test_schedules_sweep_a_quiet_job_and_deliver_its_notification(receiver: Receiver) -> None:
    job_id, secret = quiet_job(receiver)

    swept = handler(scheduler_event("sweep_deadlines"), LambdaContext())
    assert swept["task"] == "sweep_deadlines"
    assert swept["counts"]["jobs_stalled"] == 1
    assert (
        handler(scheduler_event("sweep_deadlines"), LambdaContext())["counts"]["jobs_stalled"] == 0
    )
    with config.database.SessionLocal() as session:
        assert session.scalar(select(Job.status).where(Job.id == job_id)) == JobStatus.STALLED

    delivered = handler(scheduler_event("deliver_webhooks"), LambdaContext())
    assert delivered == {"task": "deliver_webhooks", "counts": {"delivered": 1, "failed": 0}}
    [request] = receiver.requests
    assert request.signed_by(secret)
    assert request.json["type"] == "job.stalled"
    assert (request.json["data"]["id"], request.json["data"]["status"]) == (job_id, "stalled")


def test_the_tasks_run_from_the_command_line_too(receiver: Receiver) -> None:
    job_id, secret = quiet_job(receiver)
    listed = run_python("tasks.py", "tasks:run", "--env", "test")
    assert "sweep_deadlines" in listed.stdout
    assert "deliver_webhooks" in listed.stdout
    swept = run_python("tasks.py", "tasks:run", "sweep_deadlines", "--env", "test")
    assert swept.returncode == 0, swept.stderr
    assert "jobs_stalled 1" in swept.stdout
    delivered = run_python("tasks.py", "tasks:run", "deliver_webhooks", "--env", "test")
    assert delivered.returncode == 0, delivered.stderr
    assert "delivered 1, failed 0" in delivered.stdout
    [request] = receiver.requests
    assert request.signed_by(secret)
    assert request.json["data"]["id"] == job_id
