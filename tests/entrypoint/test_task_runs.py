"""Every run of a scheduled task is recorded, whatever starts it: the Lambda handler with a real
EventBridge Scheduler event, or `python tasks.py tasks:run`. A task whose statement fails is
recorded as failed and the system status says `failing`, until a run succeeds. These tests
commit for real."""

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session

from app.main import handler
from app.models import TaskOutcome, TaskRun
from config import config
from tests.helpers.capture import captured_records
from tests.helpers.emf import logged_metrics
from tests.helpers.factories import bearer_token, create_admin
from tests.helpers.lambda_events import LambdaContext, scheduler_event
from tests.helpers.processes import run_python

pytestmark = pytest.mark.usefixtures("committed")


def recorded_runs(task: str) -> list[TaskRun]:
    with config.database.SessionLocal() as session:
        return list(
            session.scalars(select(TaskRun).where(TaskRun.task == task).order_by(TaskRun.id))
        )


@contextmanager
def table_renamed(name: str) -> Iterator[None]:
    """The table is away (a task's statement on it fails) until the block ends."""
    with config.database.engine.begin() as connection:
        connection.execute(text(f"ALTER TABLE {name} RENAME TO {name}_away"))
    try:
        yield
    finally:
        with config.database.engine.begin() as connection:
            connection.execute(text(f"ALTER TABLE {name}_away RENAME TO {name}"))


def task_entry(client: TestClient, headers: dict[str, str], name: str) -> dict[str, object]:
    response = client.get("/system/status", headers=headers)
    assert response.status_code == 200, response.text
    [entry] = [task for task in response.json()["tasks"] if task["name"] == name]
    return dict(entry)


def test_a_run_through_the_handler_is_recorded_with_its_counts() -> None:
    answer = handler(scheduler_event("auth_cleanup"), LambdaContext())
    [run] = recorded_runs("auth_cleanup")
    assert run.outcome == TaskOutcome.SUCCEEDED
    assert run.counts == answer["counts"]
    assert run.rows == sum(answer["counts"].values())
    assert run.started_at <= run.finished_at
    assert (run.error_type, run.error_message) == (None, None)


def test_a_failing_task_is_recorded_and_reported_failing_until_a_run_succeeds(
    db: Session, client: TestClient
) -> None:
    # Its second statement fails. (Before the test's session touches the table: a rename
    # waits for every transaction that did.)
    with (
        captured_records("tracker.metrics") as records,
        pytest.raises(ProgrammingError),
        table_renamed("login_failures"),
    ):
        handler(scheduler_event("auth_cleanup"), LambdaContext())
    headers = bearer_token(client, create_admin(db))

    [failed] = recorded_runs("auth_cleanup")
    assert failed.outcome == TaskOutcome.FAILED
    assert failed.error_type == "sqlalchemy.exc.ProgrammingError"
    assert failed.error_message is not None
    assert "login_failures" in failed.error_message
    entry = task_entry(client, headers, "auth_cleanup")
    assert entry["verdict"] == "failing"
    assert entry["last_run_outcome"] == "failed"
    assert str(entry["last_failure"]).startswith("sqlalchemy.exc.ProgrammingError: ")
    assert client.get("/system/status", headers=headers).json()["verdict"] == "failing"

    with captured_records("tracker.metrics") as more:
        handler(scheduler_event("auth_cleanup"), LambdaContext())
    entry = task_entry(client, headers, "auth_cleanup")
    assert (entry["verdict"], entry["last_run_outcome"], entry["overdue"]) == (
        "ok",
        "succeeded",
        False,
    )
    assert entry["last_failure_at"] is not None  # the failure stays on record

    outcomes = [
        (line["Task"], line["Outcome"], line["TaskRuns"])
        for line in logged_metrics(records + more)
        if "TaskRuns" in line
    ]
    assert outcomes == [("auth_cleanup", "failed", 1), ("auth_cleanup", "succeeded", 1)]


def test_a_run_from_the_command_line_is_recorded() -> None:
    ran = run_python("tasks.py", "tasks:run", "sweep_deadlines", "--env", "test")
    assert ran.returncode == 0, ran.stderr
    [run] = recorded_runs("sweep_deadlines")
    assert run.outcome == TaskOutcome.SUCCEEDED
    assert run.counts["jobs_stalled"] == 0


def test_a_run_that_cannot_be_recorded_still_succeeds() -> None:
    with table_renamed("task_runs"):
        answer = handler(scheduler_event("sweep_deadlines"), LambdaContext())
    assert answer["task"] == "sweep_deadlines"
    assert recorded_runs("sweep_deadlines") == []
