"""The roll_up_periods task, run as the Lambda worker runs it (a real EventBridge Scheduler event)
against committed data: it rolls closed days up, and a writer that was in flight when it closed
them is waited for, so its late completion is in the rollup. These tests commit for real."""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from app.internal.periods import Interval
from app.main import handler
from app.models import EventKind, RollupState, UsageLevel, UsageRollup
from app.scheduled import run_task
from app.schemas.event import EventCreate
from app.services import billing, job_contract
from app.services.access import Caller
from config import config
from tests.helpers.factories import create_admin, create_configuration, create_customer, create_job
from tests.helpers.lambda_events import LambdaContext, scheduler_event
from tests.helpers.rollups import live

pytestmark = pytest.mark.usefixtures("committed")

NOW = datetime(2026, 3, 20, 12, tzinfo=UTC)
DAY_ONE = datetime(2026, 3, 2, 9, 10, tzinfo=UTC)


def a_job_with_a_step_done(at: datetime) -> tuple[int, int]:
    """A committed job created at `at`, its first step done then; answers (customer, job)."""
    with config.database.SessionLocal() as session:
        customer = create_customer(session)
        configuration = create_configuration(
            session, steps=(("a", 1, Decimal("2.5")), ("b", 1, Decimal("4")))
        )
        job = create_job(session, configuration=configuration, customer=customer, created_at=at)
        complete(session, job.id, "a", at)
        session.commit()
        return customer.id, job.id


def complete(session: object, job_id: int, step: str, at: datetime) -> None:
    job_contract.apply_events(
        session,  # type: ignore[arg-type]
        [
            job_contract.EventToApply(
                EventCreate(kind=EventKind.STEP, name=step, occurred_at=at),
                job_id=job_id,
                received_at=NOW,
            )
        ],
        visible_customer_id=None,
    )


def usage_cost(customer_id: int) -> tuple[Decimal, Decimal]:
    """March's cost for the customer, as read (rollups and live) and from the live facts alone."""
    with config.database.SessionLocal() as session:
        caller = Caller(create_admin(session))

        def read() -> Decimal:
            return billing.get_usage(
                session,
                caller=caller,
                start=datetime(2026, 3, 1, tzinfo=UTC),
                end=datetime(2026, 4, 1, tzinfo=UTC),
                interval=Interval.DAY,
                customer_id=customer_id,
            ).totals.cost

        return read(), live(session, read)


def test_a_schedule_rolls_closed_days_up_once() -> None:
    customer_id, _ = a_job_with_a_step_done(DAY_ONE)
    answer = handler(scheduler_event("roll_up_periods"), LambdaContext())
    assert answer["task"] == "roll_up_periods"
    assert answer["counts"]["stretches_rolled_forward"] >= 1
    with config.database.SessionLocal() as session:
        state = session.execute(select(RollupState)).scalar_one()
        assert state.rolled_until == state.closed_until
        assert state.closed_until is not None
        assert state.closed_until > DAY_ONE
        assert session.scalar(
            select(func.sum(UsageRollup.cost)).where(
                UsageRollup.customer_id == customer_id, UsageRollup.level == UsageLevel.DAY
            )
        ) == Decimal("2.5")
    assert usage_cost(customer_id) == (Decimal("2.5"), Decimal("2.5"))
    # A step done late, on the rolled-up day: marked, read live, then rolled up again.
    with config.database.SessionLocal() as session:
        job_id = session.scalar(text("SELECT max(id) FROM jobs"))
        complete(session, job_id, "b", DAY_ONE + timedelta(minutes=5))
        session.commit()
    assert usage_cost(customer_id) == (Decimal("6.5"), Decimal("6.5"))
    again = run_task("roll_up_periods")
    assert again["marked_periods_rolled"] >= 1
    assert usage_cost(customer_id) == (Decimal("6.5"), Decimal("6.5"))


def test_a_writer_in_flight_at_the_close_is_waited_for_and_counted() -> None:
    customer_id, job_id = a_job_with_a_step_done(DAY_ONE)
    # A late completion, written before the close (so no trigger marks it) and still
    # uncommitted when the task closes the day and rolls it up.
    writer = config.database.SessionLocal()
    complete(writer, job_id, "b", DAY_ONE + timedelta(hours=1))
    outcome: dict[str, int] = {}
    task = threading.Thread(
        target=lambda: outcome.update(run_task("roll_up_periods", now=NOW)), daemon=True
    )
    task.start()
    with config.database.engine.connect() as watcher:
        waiting = text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE 'LOCK TABLE%'"
        )
        for _ in range(2000):  # until the task waits for the writer's lock
            found = watcher.execute(waiting).scalar()
            watcher.rollback()  # pg_stat_activity is read once per transaction
            if found:
                break
            threading.Event().wait(0.005)
        else:
            writer.rollback()
            pytest.fail("the roll-up never waited for the writer")
    writer.commit()
    writer.close()
    task.join(timeout=60)
    assert outcome["stretches_rolled_forward"] >= 1
    assert usage_cost(customer_id) == (Decimal("6.5"), Decimal("6.5"))


def test_a_writer_that_outlasts_the_wait_stops_the_roll_forward() -> None:
    _, job_id = a_job_with_a_step_done(DAY_ONE)
    writer = config.database.SessionLocal()
    complete(writer, job_id, "b", DAY_ONE + timedelta(hours=1))
    try:
        with pytest.raises(OperationalError, match="lock timeout"):
            run_task("roll_up_periods", now=NOW)
    finally:
        writer.rollback()
        writer.close()
    with config.database.SessionLocal() as session:
        state = session.execute(select(RollupState)).scalar_one()
        assert state.closed_until == datetime(2026, 3, 19, tzinfo=UTC)
        assert state.rolled_until is None  # nothing rolled past a close it could not make safe
