"""The application's metrics: Embedded Metric Format lines on stdout, as the specification
reads them, from the places that do the work (events, webhook deliveries, task runs)."""

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.internal import metrics
from app.models import WebhookDelivery, WebhookEventType
from app.schemas.webhook import WebhookCreate
from app.services import webhook_delivery, webhooks
from app.services.access import Caller
from tests.helpers.capture import captured_records
from tests.helpers.emf import logged_metrics, metric_lines
from tests.helpers.factories import (
    create_admin,
    create_api_key,
    create_configuration,
    create_customer,
    create_job,
    unique,
)
from tests.helpers.processes import run_python
from tests.helpers.webhook_receiver import Receiver

POLICY = webhook_delivery.DeliveryPolicy(
    timeout_seconds=5,
    base_delay_seconds=30,
    max_delay_seconds=3600,
    retry_window=timedelta(hours=72),
    disable_after=timedelta(hours=120),
    allow_private_addresses=True,
    allow_http=True,
    allowed_ports=None,
)


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """What the metrics log records during the test (outside Lambda, the EMF lines go there)."""
    with captured_records("tracker.metrics") as records:
        yield records


def test_a_line_is_one_document_in_one_namespace_with_its_units(
    records: list[logging.LogRecord],
) -> None:
    metrics.emit({metrics.TASK_RUNS: 1, metrics.TASK_DURATION: 12.5}, Task="t", Outcome="failed")
    [line] = logged_metrics(records)
    [directive] = line["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Tracker"
    assert directive["Dimensions"] == [["Service", "Task", "Outcome"]]
    assert directive["Metrics"] == [
        {"Name": "TaskRuns", "Unit": "Count"},
        {"Name": "TaskDuration", "Unit": "Milliseconds"},
    ]
    assert (line["Service"], line["Task"], line["Outcome"]) == ("tracker", "t", "failed")
    assert (line["TaskRuns"], line["TaskDuration"]) == (1, 12.5)


def test_more_than_a_hundred_values_take_several_lines(records: list[logging.LogRecord]) -> None:
    metrics.emit({metrics.WEBHOOK_LATENCY: list(range(250))}, Outcome="delivered")
    lines = logged_metrics(records)
    assert [len(line["WebhookDeliveryLatency"]) for line in lines] == [100, 100, 50]


@pytest.mark.usefixtures("records")
def test_dimensions_other_than_the_metrics_are_refused() -> None:
    with pytest.raises(ValueError, match="dimensions"):
        metrics.emit({metrics.TASK_RUNS: 1}, Task="t")
    with pytest.raises(ValueError, match="dimensions"):
        metrics.emit({metrics.EVENTS_ACCEPTED: 1}, Customer="acme")


def test_nothing_is_written_for_no_values(records: list[logging.LogRecord]) -> None:
    metrics.emit({metrics.WEBHOOK_LATENCY: []}, Outcome="delivered")
    assert records == []


def test_events_accepted_and_rejected_by_reason(
    db: Session, client: TestClient, records: list[logging.LogRecord]
) -> None:
    configuration = create_configuration(db, steps=(("a", 1, Decimal("1")),))
    job = create_job(db, configuration=configuration, customer=create_customer(db))
    headers = {"X-API-Key": create_api_key(db, create_admin(db))}
    records.clear()
    batch = [
        {"job_id": job.id, "kind": "step", "name": "a"},
        {"job_id": job.id, "kind": "step", "name": "nope"},
        {"job_id": 10**12, "kind": "info"},
        {"kind": "teleport"},
    ]
    response = client.post("/events/batch", json={"events": batch}, headers=headers)
    assert response.status_code == 200, response.text
    single = client.post(f"/jobs/{job.id}/events", json={"kind": "info"}, headers=headers)
    assert single.status_code == 201

    lines = logged_metrics(records)
    accepted = [
        (line["EventsAccepted"], line.get("BatchSize"))
        for line in lines
        if "EventsAccepted" in line
    ]
    assert accepted == [(1, 4), (1, None)]
    rejected = {
        line["Reason"]: line["EventsRejected"] for line in lines if "EventsRejected" in line
    }
    assert rejected == {"invalid": 1, "not_found": 1, "unknown_step": 1}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


def test_each_delivery_counts_by_outcome_with_its_latency(
    db: Session, receiver: Receiver, records: list[logging.LogRecord]
) -> None:
    endpoint, _ = webhooks.create_webhook(
        db,
        caller=Caller(create_admin(db)),
        webhook_in=WebhookCreate(url=receiver.url, event_types=[WebhookEventType.JOB_COMPLETED]),
    )
    configuration = create_configuration(db, steps=(("a", 1, Decimal("1")),))
    job = create_job(db, configuration=configuration, customer=create_customer(db))
    db.add(
        WebhookDelivery(
            endpoint_id=endpoint.id,
            message_id=unique("msg"),
            event_type="job.completed",
            job_id=job.id,
            next_attempt_at=datetime.now(UTC),
        )
    )
    db.flush()
    sessions = sessionmaker(bind=db.connection(), join_transaction_mode="create_savepoint")
    counts = webhook_delivery.deliver_due(
        sessions, now=datetime.now(UTC), max_claims=10, policy=POLICY
    )
    assert counts == {"delivered": 1, "failed": 0}
    [line] = [line for line in logged_metrics(records) if "WebhookDeliveries" in line]
    assert (line["Outcome"], line["WebhookDeliveries"]) == ("delivered", 1)
    assert line["WebhookDeliveryLatency"] >= 0


@pytest.mark.usefixtures("committed")  # the task's run is recorded for real
def test_on_lambda_the_lines_go_to_stdout_for_cloudwatch() -> None:
    ran = run_python(
        "tasks.py", "tasks:run", "sweep_deadlines", "--env", "test", env={"LAMBDA_MODE": "true"}
    )
    assert ran.returncode == 0, ran.stderr
    lines = metric_lines(ran.stdout)
    assert {"JobsStalled", "TaskRuns"} <= {name for line in lines for name in line}
