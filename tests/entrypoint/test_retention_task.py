"""The `prune_events` task through the Lambda entry point (EventBridge Scheduler and rule events)
and `python tasks.py tasks:run`: events older than EVENT_RETENTION_DAYS go, in bounded batches,
once, and nothing happens without the setting. These tests commit for real."""

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from app.main import handler
from app.models import Event, EventKind, Job
from app.scheduled import TaskRun, prune_events
from app.schemas.event import EventCreate
from app.services import job_contract
from config import config
from tests.helpers.factories import create_configuration, create_customer, create_job
from tests.helpers.lambda_events import LambdaContext, scheduled_event, scheduler_event
from tests.helpers.processes import run_python

pytestmark = pytest.mark.usefixtures("committed")

RETENTION_DAYS = 30


@dataclass(frozen=True)
class History:
    job_ids: list[int]
    old: int  # events received 40 days ago, of which one unresolved error per job
    recent: int
    updated_at: dict[int, datetime]


def committed_history(jobs: int = 3, old_per_job: int = 4) -> History:
    """Jobs with events received 40 days ago (the last of them an unresolved error) and one
    received an hour ago, committed."""
    long_ago = datetime.now(UTC) - timedelta(days=40)
    with config.database.SessionLocal() as session:
        configuration = create_configuration(session, steps=(("a", 1, Decimal("1")),))
        customer = create_customer(session)
        made = [
            create_job(session, configuration=configuration, customer=customer) for _ in range(jobs)
        ]
        to_apply = []
        for job in made:
            kinds = [EventKind.INFO] * (old_per_job - 1) + [EventKind.ERROR]
            to_apply += [
                job_contract.EventToApply(
                    EventCreate(kind=kind),
                    job_id=job.id,
                    received_at=long_ago + timedelta(minutes=n),
                )
                for n, kind in enumerate(kinds)
            ]
            to_apply.append(
                job_contract.EventToApply(
                    EventCreate(kind=EventKind.INFO),
                    job_id=job.id,
                    received_at=datetime.now(UTC) - timedelta(hours=1),
                )
            )
        job_contract.apply_events(session, to_apply, visible_customer_id=None)
        session.commit()
        job_ids = [job.id for job in made]
        updated = {
            row.id: row.updated_at for row in session.execute(select(Job.id, Job.updated_at))
        }
    return History(job_ids, jobs * old_per_job, jobs, updated)


def stored() -> dict[str, Any]:
    with config.database.SessionLocal() as session:
        return {
            "events": session.scalar(select(func.count()).select_from(Event)),
            "open errors": session.scalar(
                select(func.count()).where(
                    Event.kind == EventKind.ERROR, Event.resolved_at.is_(None)
                )
            ),
            "jobs": {
                row.id: (row.events_pruned_count, row.event_count, row.updated_at)
                for row in session.execute(
                    select(Job.id, Job.events_pruned_count, Job.event_count, Job.updated_at)
                )
            },
        }


@pytest.fixture
def retention_days(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(config.settings, "event_retention_days", RETENTION_DAYS)
    return RETENTION_DAYS


@pytest.mark.usefixtures("retention_days")
@pytest.mark.parametrize(
    "event", [scheduler_event("prune_events"), scheduled_event("tracker-prod-prune_events")]
)
def test_a_schedule_prunes_old_events_once_and_keeps_open_errors(event: dict[str, Any]) -> None:
    history = committed_history()
    pruned_per_job = history.old // len(history.job_ids) - 1  # the open error stays

    answer = handler(event, LambdaContext())

    assert answer == {"task": "prune_events", "counts": {"events_pruned": 9}}
    left = stored()
    assert left["events"] == history.recent + len(history.job_ids)
    assert left["open errors"] == len(history.job_ids)
    for job_id in history.job_ids:
        # Every event still counted; updated_at as it was (lists sort by it).
        assert left["jobs"][job_id] == (pruned_per_job, 5, history.updated_at[job_id])
    assert handler(event, LambdaContext())["counts"] == {"events_pruned": 0}
    assert stored() == left


def test_without_a_retention_period_the_task_deletes_nothing() -> None:
    assert config.settings.event_retention_days is None
    committed_history()
    before = stored()
    answer = handler(scheduler_event("prune_events"), LambdaContext())
    assert answer == {"task": "prune_events", "counts": {"events_pruned": 0}}
    assert stored() == before


@pytest.mark.usefixtures("retention_days")
def test_a_run_is_bounded_and_the_next_one_goes_on() -> None:
    committed_history(jobs=2, old_per_job=4)  # 6 events to prune
    run = TaskRun(
        now=datetime.now(UTC),
        batch_size=2,
        max_batches=2,
        session_factory=config.database.SessionLocal,
    )
    assert prune_events(run) == {"events_pruned": 4}
    assert prune_events(run) == {"events_pruned": 2}
    assert prune_events(run) == {"events_pruned": 0}


@pytest.mark.usefixtures("retention_days")
def test_two_runs_at_once_delete_and_count_each_event_once() -> None:
    history = committed_history(jobs=10, old_per_job=11)  # 100 events to prune
    barrier = threading.Barrier(2)
    counts: list[int] = []

    def run() -> None:
        task_run = TaskRun(
            now=datetime.now(UTC),
            batch_size=3,
            max_batches=100,
            session_factory=config.database.SessionLocal,
        )
        barrier.wait()
        counts.append(prune_events(task_run)["events_pruned"])

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(counts) == 100
    left = stored()
    assert left["events"] == history.recent + len(history.job_ids)
    assert {left["jobs"][job_id][0] for job_id in history.job_ids} == {10}


def test_the_task_runs_from_the_command_line() -> None:
    committed_history()
    listed = run_python("tasks.py", "tasks:run", "--env", "test")
    assert "prune_events" in listed.stdout
    pruned = run_python(
        "tasks.py",
        "tasks:run",
        "prune_events",
        "--env",
        "test",
        env={"EVENT_RETENTION_DAYS": str(RETENTION_DAYS)},
    )
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.strip() == "prune_events: events_pruned 9"
    again = run_python(
        "tasks.py", "tasks:run", "prune_events", "--env", "test", env={"EVENT_RETENTION_DAYS": "0"}
    )
    assert again.returncode == 1
    assert "event_retention_days" in again.stderr
    assert "greater than or equal to 1" in again.stderr
