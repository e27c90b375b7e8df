"""The job contract's per-step records (step error counts, completion times and their timing
for the funnel) always agree with the events they come from, whatever mix of single events and
batches, replays and out-of-order times a script sends."""

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Event, EventKind, Job
from app.schemas.event import EventCreate
from app.services import events as event_service
from app.services.access import Caller
from tests.helpers.factories import create_admin, create_customer, create_job
from tests.helpers.job_records import (
    funnel_facts,
    funnel_facts_worked_out,
    step_errors_from_events,
    step_errors_table,
)
from tests.helpers.scripts import pipeline

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

# Events as (job index, kind, step tag or None, event_id or None, minutes after T0 or None):
# few jobs, steps and ids, so that errors pile up on the same step and ids are replayed.
event_plan = st.lists(
    st.tuples(
        st.integers(0, 1),
        st.sampled_from([EventKind.STEP, EventKind.ERROR, EventKind.ERROR, EventKind.INFO]),
        st.sampled_from([None, "upload", "segment"]),
        st.sampled_from([None, "a", "b", "c"]),
        st.one_of(st.none(), st.integers(-3, 3)),
    ),
    min_size=4,
    max_size=30,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=event_plan, batch_sizes=st.lists(st.integers(1, 8), min_size=1, max_size=10))
def test_errors_and_step_times_always_agree_with_the_events(
    db: Session, plan: list[tuple[int, EventKind, str | None, str | None, int | None]],
    batch_sizes: list[int],
) -> None:  # fmt: skip
    nested = db.begin_nested()
    try:
        configuration, customer = pipeline(db), create_customer(db)
        admin = Caller(user=create_admin(db))
        jobs = [create_job(db, configuration=configuration, customer=customer) for _ in range(2)]
        items: list[dict[str, Any]] = [
            {
                "job_id": jobs[job].id,
                "kind": kind.value,
                "name": "segment" if kind == EventKind.STEP and name is None else name,
                "event_id": event_id,
                "occurred_at": T0 + timedelta(minutes=minutes) if minutes is not None else None,
            }
            for job, kind, name, event_id, minutes in plan
        ]
        # Some events one at a time, some in batches of several, as scripts send them.
        position, sizes = 0, iter(batch_sizes * 30)
        while position < len(items):
            chunk = items[position : position + next(sizes)]
            position += len(chunk)
            if len(chunk) == 1:
                [item] = chunk
                event_service.record_event(
                    db,
                    caller=admin,
                    job_id=item.pop("job_id"),
                    event_in=EventCreate.model_validate(item),
                )
            else:
                event_service.record_batch(db, caller=admin, items=chunk)

        ids = [job.id for job in jobs]
        table = step_errors_table(db, ids)
        assert table == step_errors_from_events(db, ids)
        assert funnel_facts(db, ids) == funnel_facts_worked_out(db, ids)
        for job in db.scalars(select(Job).where(Job.id.in_(ids))):
            stepless = db.scalar(
                select(func.count()).where(
                    Event.job_id == job.id,
                    Event.kind == EventKind.ERROR,
                    Event.step_id.is_(None),
                )
            )
            counted = sum(count for (job_id, _), (count, _, _) in table.items() if job_id == job.id)
            assert job.error_count == counted + (stepless or 0)
    finally:
        nested.rollback()
