"""Billing properties over random configurations and event streams, through the real services.

Whatever the stream (repeated event ids, retries, errors, out-of-order arrival, completion times
on either side of month and day boundaries, several customers), usage, invoices, the jobs' costs
and the step completions agree with each other and with an independent reckoning of what was
completed when; and replaying the events changes none of them.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.internal.periods import Interval
from app.models import EventKind, Job, JobConfiguration, JobStepCompletion
from app.schemas.event import EventCreate
from app.schemas.job import JobCreate
from app.services import billing, jobs
from app.services.access import Caller
from app.services.events import apply_to_jobs
from tests.helpers.factories import create_admin, create_configuration, create_customer, unique

# Completion times straddling the month (and so day) boundaries of January to March 2026 in UTC,
# and, with offsets of up to 14 hours, in the zones below.
OFFSETS = [
    timedelta(days=-1),
    timedelta(hours=-14),
    timedelta(hours=-13),
    timedelta(hours=-5, minutes=-30),
    timedelta(hours=-1),
    timedelta(microseconds=-1),
    timedelta(0),
    timedelta(microseconds=1),
    timedelta(hours=8),
    timedelta(hours=13),
    timedelta(days=1, hours=-1),
]
BOUNDARIES = [datetime(2026, month, 1, tzinfo=UTC) for month in (1, 2, 3)]
INSTANTS = sorted({boundary + offset for boundary in BOUNDARIES for offset in OFFSETS})
ZONES = ["UTC", "Pacific/Auckland", "America/Los_Angeles", "Asia/Kolkata", "Europe/Paris"]
# Every instant above falls in these months, in every zone above.
START, END = date(2025, 12, 1), date(2026, 4, 1)
MONTHS = ["2025-12", "2026-01", "2026-02", "2026-03"]

PROPERTY_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@dataclass(frozen=True)
class EventSpec:
    job: int  # index into Scenario.jobs
    kind: EventKind
    step: int | None  # index into the job's configuration's steps
    event_id: str | None
    occurred_at: datetime | None
    ends_batch: bool


@dataclass(frozen=True)
class Scenario:
    configurations: list[list[tuple[int, Decimal]]]  # steps as (points, cost)
    customer_count: int
    jobs: list[tuple[int, int]]  # (configuration, customer) indexes
    events: list[EventSpec]
    tz: str


costs = st.decimals(min_value=0, max_value=Decimal("9999.9999"), places=4)
steps = st.lists(st.tuples(st.integers(1, 1000), costs), min_size=1, max_size=6)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    configurations = draw(st.lists(steps, min_size=1, max_size=2))
    customer_count = draw(st.integers(1, 3))
    job_list = draw(
        st.lists(
            st.tuples(st.integers(0, len(configurations) - 1), st.integers(0, customer_count - 1)),
            min_size=1,
            max_size=5,
        )
    )
    events = []
    for _ in range(draw(st.integers(1, 30))):
        job = draw(st.integers(0, len(job_list) - 1))
        step_count = len(configurations[job_list[job][0]])
        kind = draw(st.sampled_from([EventKind.STEP] * 4 + [EventKind.ERROR, EventKind.INFO]))
        step: int | None = draw(st.integers(0, step_count - 1))
        if kind != EventKind.STEP:
            step = draw(st.none() | st.just(step)) if kind == EventKind.ERROR else None
        events.append(
            EventSpec(
                job=job,
                kind=kind,
                step=step,
                event_id=draw(st.none() | st.sampled_from(["a", "b", "c", "d", "e"])),
                occurred_at=(
                    draw(st.sampled_from(INSTANTS))
                    if kind == EventKind.STEP
                    else draw(st.none() | st.sampled_from(INSTANTS))
                ),
                ends_batch=draw(st.booleans()),
            )
        )
    return Scenario(configurations, customer_count, job_list, events, draw(st.sampled_from(ZONES)))


@dataclass
class World:
    """The scenario's rows: customers, configurations and jobs."""

    customer_ids: list[int]
    configurations: list[JobConfiguration]
    job_ids: list[int]


def build(db: Session, caller: Caller, scenario: Scenario) -> World:
    customer_ids = [create_customer(db).id for _ in range(scenario.customer_count)]
    configurations = [
        create_configuration(
            db, steps=[(f"s{index}", points, cost) for index, (points, cost) in enumerate(steps)]
        )
        for steps in scenario.configurations
    ]
    job_ids = []
    for configuration_index, customer_index in scenario.jobs:
        job, _ = jobs.create_job(
            db,
            caller=caller,
            job_in=JobCreate(
                provider_job_id=unique("prop"),
                tag=configurations[configuration_index].tag,
                customer_id=customer_ids[customer_index],
            ),
        )
        job_ids.append(job.id)
    return World(customer_ids, configurations, job_ids)


def send(db: Session, caller: Caller, world: World, events: Sequence[EventSpec]) -> None:
    """Apply the events as the API does: in batches, each with its jobs locked."""
    batch: list[EventSpec] = []
    for index, spec in enumerate(events):
        batch.append(spec)
        if spec.ends_batch or index == len(events) - 1:
            locked = {
                job.id: job
                for job in jobs.locked_jobs(
                    db, caller=caller, ids=[world.job_ids[item.job] for item in batch]
                )
            }
            outcomes = apply_to_jobs(
                db, [(locked[world.job_ids[item.job]], event_in(item)) for item in batch]
            )
            assert all(outcome.result != "rejected" for outcome in outcomes)
            batch = []


def event_in(spec: EventSpec) -> EventCreate:
    return EventCreate(
        kind=spec.kind,
        name=f"s{spec.step}" if spec.step is not None else None,
        event_id=spec.event_id,
        occurred_at=spec.occurred_at,
    )


@dataclass
class Expected:
    """What billing must say, reckoned from the scenario alone."""

    cost: dict[tuple[int, str], Decimal]  # by (customer index, month)
    steps: dict[int, int]  # by customer index
    points: dict[int, int]
    jobs_completed: dict[int, int]


def reckon(scenario: Scenario) -> Expected:
    """Each (job, step) is billed once, at the earliest time of its accepted step events; an event
    whose event_id the job has already seen is not accepted."""
    seen: set[tuple[int, str]] = set()
    completed_at: dict[tuple[int, int], datetime] = {}
    for spec in scenario.events:
        if spec.event_id is not None:
            if (spec.job, spec.event_id) in seen:
                continue
            seen.add((spec.job, spec.event_id))
        if spec.kind == EventKind.STEP and spec.step is not None and spec.occurred_at is not None:
            key = (spec.job, spec.step)
            completed_at[key] = min(completed_at.get(key, spec.occurred_at), spec.occurred_at)
    zone = ZoneInfo(scenario.tz)
    expected = Expected(defaultdict(Decimal), defaultdict(int), defaultdict(int), defaultdict(int))
    for (job, step), at in completed_at.items():
        configuration, customer = scenario.jobs[job]
        points, cost = scenario.configurations[configuration][step]
        expected.cost[customer, f"{at.astimezone(zone):%Y-%m}"] += cost
        expected.steps[customer] += 1
        expected.points[customer] += points
    for job, (configuration, customer) in enumerate(scenario.jobs):
        step_count = len(scenario.configurations[configuration])
        if all((job, step) in completed_at for step in range(step_count)):
            expected.jobs_completed[customer] += 1
    return expected


def billing_state(db: Session, caller: Caller, world: World, tz: str) -> dict[str, Any]:
    """Everything billing answers for the scenario's customers, plus the jobs and completions."""
    state: dict[str, Any] = {}
    for customer_id in world.customer_ids:
        for interval in Interval:
            state[f"usage {customer_id} {interval}"] = billing.get_usage(
                db,
                caller=caller,
                start=START,
                end=END,
                interval=interval,
                tz=tz,
                customer_id=customer_id,
            ).model_dump()
        for month in MONTHS:
            state[f"invoice {customer_id} {month}"] = billing.get_invoice(
                db, caller=caller, customer_id=customer_id, period=month, tz=tz
            ).model_dump()
        state[f"job costs {customer_id}"] = db.scalar(
            select(func.coalesce(func.sum(Job.cost), 0)).where(Job.customer_id == customer_id)
        )
        state[f"job steps {customer_id}"] = db.scalar(
            select(func.coalesce(func.sum(Job.steps_completed), 0)).where(
                Job.customer_id == customer_id
            )
        )
        state[f"completion costs {customer_id}"] = db.scalar(
            select(func.coalesce(func.sum(JobStepCompletion.cost), 0)).where(
                JobStepCompletion.customer_id == customer_id
            )
        )
    state["all customers"] = billing.get_usage(
        db, caller=caller, start=START, end=END, interval=Interval.MONTH, tz=tz
    ).model_dump()
    return state


def check(state: dict[str, Any], world: World, expected: Expected) -> None:
    everyone = [
        row for row in state["all customers"]["rows"] if row["customer_id"] in world.customer_ids
    ]
    for index, customer_id in enumerate(world.customer_ids):
        month_usage = state[f"usage {customer_id} {Interval.MONTH}"]
        totals = month_usage["totals"]
        assert totals["cost"] == state[f"job costs {customer_id}"]
        assert totals["cost"] == state[f"completion costs {customer_id}"]
        assert totals["cost"] == sum(cost for (c, _), cost in expected.cost.items() if c == index)
        assert totals["steps_completed"] == state[f"job steps {customer_id}"]
        assert totals["steps_completed"] == expected.steps[index]
        assert totals["points"] == expected.points[index]
        assert totals["jobs_completed"] == expected.jobs_completed[index]
        for interval in (Interval.WEEK, Interval.DAY):
            assert state[f"usage {customer_id} {interval}"]["totals"] == totals

        by_month = {f"{row['period_start']:%Y-%m}": row["cost"] for row in month_usage["rows"]}
        assert set(by_month) <= set(MONTHS)
        invoiced = Decimal(0)
        for month in MONTHS:
            invoice = state[f"invoice {customer_id} {month}"]
            assert invoice["total"] == by_month.get(month, Decimal(0))
            assert invoice["total"] == expected.cost.get((index, month), Decimal(0))
            assert invoice["total"] == sum(line["amount"] for line in invoice["lines"])
            for line in invoice["lines"]:
                assert line["amount"] == line["quantity"] * line["unit_cost"]
            invoiced += invoice["total"]
        assert invoiced == totals["cost"]
        assert (
            sum(row["cost"] for row in everyone if row["customer_id"] == customer_id)
            == (totals["cost"])
        )


@pytest.fixture
def caller(db: Session) -> Caller:
    return Caller(user=create_admin(db))


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_usage_invoices_jobs_and_completions_agree_and_replays_change_nothing(
    db: Session, caller: Caller, scenario: Scenario
) -> None:
    nested = db.begin_nested()
    try:
        world = build(db, caller, scenario)
        send(db, caller, world, scenario.events)
        state = billing_state(db, caller, world, scenario.tz)
        check(state, world, reckon(scenario))

        # Every event that carries an event_id, again, in reverse order.
        replay = [spec for spec in reversed(scenario.events) if spec.event_id is not None]
        send(db, caller, world, replay)
        db.expire_all()
        assert billing_state(db, caller, world, scenario.tz) == state
    finally:
        nested.rollback()
