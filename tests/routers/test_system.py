"""GET /system/status: admins only; each backlog's figures and verdict; every statement it runs
reads an index."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from app.internal.webhook_signing import generate_secret
from app.models import (
    Event,
    EventKind,
    JobStatus,
    Role,
    TaskOutcome,
    TaskRun,
    WebhookDelivery,
    WebhookEndpoint,
)
from app.scheduled import SCHEDULED_TASKS
from app.services import system_status
from app.services.webhooks import configured_secret_box
from tests.helpers.factories import (
    bearer_token,
    create_admin,
    create_api_key,
    create_configuration,
    create_customer,
    create_job,
    create_user,
    unique,
)

TASKS = [system_status.Task(task.name, task.cadence) for task in SCHEDULED_TASKS.values()]


def status_of(client: TestClient, db: Session) -> dict[str, Any]:
    response = client.get("/system/status", headers=bearer_token(client, create_admin(db)))
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_clients_and_api_keys_are_refused_with_403(db: Session, client: TestClient) -> None:
    member = create_user(db, role=Role.CLIENT, customer=create_customer(db))
    assert client.get("/system/status", headers=bearer_token(client, member)).status_code == 403
    key = create_api_key(db, create_admin(db))
    assert client.get("/system/status", headers={"X-API-Key": key}).status_code == 403
    assert client.get("/system/status").status_code == 401


def test_the_document_lists_the_403(client: TestClient) -> None:
    answers = client.get("/openapi.json").json()["paths"]["/system/status"]["get"]["responses"]
    assert {"200", "401", "403"} <= set(answers)


def test_a_quiet_system_reports_each_task_and_backlog(db: Session, client: TestClient) -> None:
    answer = status_of(client, db)
    assert [task["name"] for task in answer["tasks"]] == list(SCHEDULED_TASKS)
    sweep = next(task for task in answer["tasks"] if task["name"] == "sweep_deadlines")
    assert sweep["cadence_seconds"] == 60
    assert (sweep["last_run_at"], sweep["verdict"]) == (None, "warning")  # never ran
    backlogs = answer["backlogs"]
    assert backlogs["webhook_deliveries"]["verdict"] == "ok"
    assert backlogs["deadlines"] == {"unswept": 0, "oldest_unswept_seconds": None, "verdict": "ok"}
    assert backlogs["event_retention"] is None  # no retention set
    assert answer["verdict"] == "warning"


def pending_delivery(db: Session, *, due: datetime, enabled: bool = True) -> WebhookDelivery:
    configuration = create_configuration(db, steps=(("a", 1, Decimal("1")),))
    job = create_job(db, configuration=configuration, customer=create_customer(db))
    endpoint = WebhookEndpoint(
        url="https://hooks.example.com/in",
        event_types=["job.completed"],
        secret_encrypted=configured_secret_box().encrypt(generate_secret()),
        enabled=enabled,
    )
    db.add(endpoint)
    db.flush()
    delivery = WebhookDelivery(
        endpoint_id=endpoint.id,
        message_id=unique("msg"),
        event_type="job.completed",
        job_id=job.id,
        next_attempt_at=due,
        created_at=due,
    )
    db.add(delivery)
    db.flush()
    return delivery


def test_a_stuck_outbox_turns_the_webhook_backlog_to_warning_then_failing(
    db: Session, client: TestClient
) -> None:
    now = datetime.now(UTC)
    delivery = pending_delivery(db, due=now - timedelta(minutes=10))
    webhooks = status_of(client, db)["backlogs"]["webhook_deliveries"]
    assert webhooks["pending"] == 1
    assert webhooks["oldest_due_wait_seconds"] >= 600
    assert webhooks["verdict"] == "warning"

    delivery.next_attempt_at = now - timedelta(hours=2)
    db.flush()
    answer = status_of(client, db)
    assert answer["backlogs"]["webhook_deliveries"]["verdict"] == "failing"
    assert answer["verdict"] == "failing"


def test_a_delivery_waiting_for_its_retry_is_no_backlog(db: Session, client: TestClient) -> None:
    pending_delivery(db, due=datetime.now(UTC) + timedelta(hours=1))
    webhooks = status_of(client, db)["backlogs"]["webhook_deliveries"]
    assert (webhooks["pending"], webhooks["oldest_due_wait_seconds"]) == (1, 0)
    assert webhooks["verdict"] == "ok"


def test_an_endpoint_delivery_disabled_is_a_warning(db: Session, client: TestClient) -> None:
    db.add(
        WebhookEndpoint(
            url="https://hooks.example.com/in",
            event_types=["job.failed"],
            enabled=False,
            disabled_at=datetime.now(UTC),
            disabled_reason="failing for 120 hours",
        )
    )
    webhooks = status_of(client, db)["backlogs"]["webhook_deliveries"]
    assert (webhooks["endpoints_disabled"], webhooks["verdict"]) == (1, "warning")


def test_an_endpoint_turned_off_waits_with_its_deliveries_and_is_no_backlog(
    db: Session, client: TestClient
) -> None:
    pending_delivery(db, due=datetime.now(UTC) - timedelta(hours=2), enabled=False)
    webhooks = status_of(client, db)["backlogs"]["webhook_deliveries"]
    assert (webhooks["pending"], webhooks["oldest_due_wait_seconds"]) == (1, 0)
    assert (webhooks["endpoints_disabled"], webhooks["verdict"]) == (0, "ok")
    waited = system_status.oldest_due_delivery_wait(db, now=datetime.now(UTC))
    assert waited == timedelta(0)  # the WebhookOldestDueWait metric behind the alarm


def test_jobs_past_their_deadline_no_sweep_marked(db: Session, client: TestClient) -> None:
    configuration = create_configuration(db, steps=(("a", 1, Decimal("1")),))
    job = create_job(db, configuration=configuration, customer=create_customer(db))
    job.deadline_at = datetime.now(UTC) - timedelta(minutes=30)
    db.flush()
    deadlines = status_of(client, db)["backlogs"]["deadlines"]
    assert deadlines["unswept"] == 1
    assert deadlines["oldest_unswept_seconds"] >= 1800
    assert deadlines["verdict"] == "warning"

    job.status = JobStatus.STALLED  # what the sweep does
    db.flush()
    assert status_of(client, db)["backlogs"]["deadlines"]["unswept"] == 0


def test_a_task_is_overdue_without_a_success_within_twice_its_cadence() -> None:
    task = system_status.Task("sweep_deadlines", timedelta(minutes=1))
    now = datetime.now(UTC)

    def run(minutes_ago: float) -> Any:
        return type("Run", (), {"started_at": now - timedelta(minutes=minutes_ago)})

    on_time = system_status.task_status(task, success=run(1.5), failure=None, now=now)
    assert (on_time.overdue, on_time.verdict) == (False, "ok")
    late = system_status.task_status(task, success=run(2.5), failure=None, now=now)
    assert (late.overdue, late.verdict) == (True, "failing")
    failure = run(0.5)
    failure.error_type, failure.error_message = "TimeoutError", "took too long"
    failed = system_status.task_status(task, success=run(1), failure=failure, now=now)
    assert (failed.last_run_outcome, failed.verdict) == ("failed", "failing")
    assert failed.last_failure == "TimeoutError: took too long"


def test_unpruned_events_past_the_retention(db: Session) -> None:
    configuration = create_configuration(db, steps=(("a", 1, Decimal("1")),))
    job = create_job(db, configuration=configuration, customer=create_customer(db))
    now = datetime.now(UTC)
    db.add(Event(job_id=job.id, kind=EventKind.INFO, received_at=now - timedelta(days=40)))
    db.flush()
    retention = system_status.retention_backlog(db, now=now, retention_days=30)
    assert retention is not None
    assert retention.overdue_seconds == pytest.approx(timedelta(days=10).total_seconds())
    assert retention.verdict == "failing"
    within = system_status.retention_backlog(db, now=now, retention_days=50)
    assert within is not None
    assert (within.overdue_seconds, within.verdict) == (0, "ok")


@contextmanager
def statements_of(db: Session) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    connection = db.connection()
    event.listen(connection, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(connection, "before_cursor_execute", record)


def test_every_statement_of_the_status_reads_an_index(db: Session) -> None:
    now = datetime.now(UTC)
    pending_delivery(db, due=now - timedelta(minutes=10))
    db.add(
        TaskRun(
            task="sweep_deadlines",
            started_at=now,
            finished_at=now,
            outcome=TaskOutcome.SUCCEEDED,
            counts={},
        )
    )
    db.flush()
    # Whatever the planner would choose on these few rows: a plan without a table scan exists.
    db.execute(text("SET LOCAL enable_seqscan = off"))
    with statements_of(db) as seen:
        system_status.read_status(db, tasks=TASKS, now=now, retention_days=30)
        system_status.jobs_finished(db, since=now - timedelta(minutes=1), until=now)
    assert len(seen) >= 10
    cursor = db.connection().connection.cursor()
    for statement, parameters in seen:
        cursor.execute(f"EXPLAIN {statement}", parameters)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        assert "Seq Scan" not in plan, f"{statement}\n{plan}"


def test_a_task_on_no_schedule_is_never_overdue() -> None:
    task = system_status.Task("reencrypt_webhook_secrets", None)
    now = datetime.now(UTC)
    never = system_status.task_status(task, success=None, failure=None, now=now)
    assert (never.cadence_seconds, never.overdue, never.verdict) == (None, False, "ok")
    long_ago = type("Run", (), {"started_at": now - timedelta(days=20)})
    old = system_status.task_status(task, success=long_ago, failure=None, now=now)
    assert (old.overdue, old.verdict) == (False, "ok")
