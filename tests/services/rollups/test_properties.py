"""Rollup-backed answers equal the per-step tables' answers, for random event streams (late,
out-of-order and repeated events, steps moved earlier, errors and retries) and random ranges,
intervals and zones (half-hour, 45-minute and daylight-saving ones): before the roll-up task
runs, after it, after later events land in rolled-up periods, after it runs again, and after
the raw events are pruned."""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from app.internal.periods import Interval
from app.models import EventKind, Job, UsageLevel, UsageRollup
from app.schemas.event import EventCreate
from app.services import analytics, billing, jobs, retention, rollups
from app.services.access import Caller
from app.services.events import apply_to_jobs
from tests.helpers.factories import create_admin, create_configuration, create_customer, create_job
from tests.helpers.rollups import live, mark_count, roll_up

# Moments around the day, week and month boundaries of February and March 2026 in UTC and in the
# zones below (offsets up to 14 hours, and odd minutes: a range may start anywhere).
BOUNDARIES = [datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)]
OFFSETS = [
    timedelta(days=-9),
    timedelta(days=-1, hours=-3),
    timedelta(hours=-13, minutes=-45),
    timedelta(hours=-5, minutes=-45),
    timedelta(hours=-5, minutes=-30),
    timedelta(minutes=-15),
    timedelta(microseconds=-1),
    timedelta(0),
    timedelta(minutes=7, seconds=30),
    timedelta(hours=8, minutes=45),
    timedelta(hours=12, minutes=45),
    timedelta(days=2, hours=5),
    timedelta(days=12),
]
INSTANTS = sorted({boundary + offset for boundary in BOUNDARIES for offset in OFFSETS})
ZONES = [
    "UTC",
    "Asia/Kathmandu",  # +05:45
    "Australia/Eucla",  # +08:45
    "Pacific/Chatham",  # +12:45 / +13:45
    "Asia/Kolkata",  # +05:30
    "America/St_Johns",  # -03:30 / -02:30
    "Australia/Lord_Howe",  # +10:30 / +11:00
    "America/Los_Angeles",
    "Pacific/Kiritimati",  # +14
]
# The roll-up's clock: every instant above is in a closed, rolled-up day by then.
ROLL_UP_AT = datetime(2026, 4, 20, tzinfo=UTC)

PROPERTY_SETTINGS = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@dataclass(frozen=True)
class EventSpec:
    job: int
    kind: EventKind
    step: int | None
    event_id: str | None
    occurred_at: datetime | None


@dataclass(frozen=True)
class Scenario:
    step_counts: list[int]  # per configuration
    customer_count: int
    jobs: list[tuple[int, int, datetime]]  # (configuration, customer, created_at)
    before: list[EventSpec]  # sent before the first roll-up
    after: list[EventSpec]  # sent after it: late events into rolled-up periods
    ranges: list[tuple[datetime, datetime]]
    interval: Interval
    tz: str


@st.composite
def event_lists(
    draw: st.DrawFn, job_list: list[tuple[int, int, datetime]], steps: list[int]
) -> list[EventSpec]:
    events = []
    for _ in range(draw(st.integers(0, 15))):
        job = draw(st.integers(0, len(job_list) - 1))
        kind = draw(st.sampled_from([EventKind.STEP] * 4 + [EventKind.ERROR, EventKind.INFO]))
        step: int | None = draw(st.integers(0, steps[job_list[job][0]] - 1))
        if kind == EventKind.INFO or (kind == EventKind.ERROR and draw(st.booleans())):
            step = None
        events.append(
            EventSpec(
                job,
                kind,
                step,
                draw(st.none() | st.sampled_from(["a", "b", "c"])),
                draw(st.sampled_from(INSTANTS)) if kind == EventKind.STEP else None,
            )
        )
    return events


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    step_counts = draw(st.lists(st.integers(1, 4), min_size=1, max_size=2))
    customer_count = draw(st.integers(1, 2))
    job_list = draw(
        st.lists(
            st.tuples(
                st.integers(0, len(step_counts) - 1),
                st.integers(0, customer_count - 1),
                st.sampled_from(INSTANTS),
            ),
            min_size=1,
            max_size=4,
        )
    )
    ranges = []
    for _ in range(2):
        start, end = sorted(
            draw(st.lists(st.sampled_from(INSTANTS), min_size=2, max_size=2, unique=True))
        )
        ranges.append((start, end))
    return Scenario(
        step_counts,
        customer_count,
        job_list,
        draw(event_lists(job_list, step_counts)),
        draw(event_lists(job_list, step_counts)),
        ranges,
        draw(st.sampled_from(list(Interval))),
        draw(st.sampled_from(ZONES)),
    )


@dataclass
class World:
    caller: Caller
    customer_ids: list[int]
    tags: list[str]
    configuration_ids: list[int]
    job_ids: list[int]


def build(db: Session, scenario: Scenario) -> World:
    caller = Caller(create_admin(db))
    customers = [create_customer(db) for _ in range(scenario.customer_count)]
    configurations = [
        create_configuration(
            db, steps=[(f"s{index}", index + 1, Decimal(f"{index}.25")) for index in range(count)]
        )
        for count in scenario.step_counts
    ]
    job_ids = [
        create_job(
            db,
            configuration=configurations[configuration],
            customer=customers[customer],
            created_at=created_at,
        ).id
        for configuration, customer, created_at in scenario.jobs
    ]
    return World(
        caller,
        [customer.id for customer in customers],
        [configuration.tag for configuration in configurations],
        [configuration.id for configuration in configurations],
        job_ids,
    )


def send(db: Session, world: World, events: Sequence[EventSpec]) -> None:
    for spec in events:
        (job,) = jobs.locked_jobs(db, caller=world.caller, ids=[world.job_ids[spec.job]])
        event = EventCreate(
            kind=spec.kind,
            name=f"s{spec.step}" if spec.step is not None else None,
            event_id=spec.event_id,
            occurred_at=spec.occurred_at,
        )
        apply_to_jobs(db, [(job, event)])


def answers(db: Session, world: World, scenario: Scenario) -> list[Any]:
    """Usage of all customers and of one customer's one tag; the funnel of every configuration,
    of all customers and of one; for each range."""
    found: list[Any] = []
    for start, end in scenario.ranges:
        for customer_id, tag in ((None, None), (world.customer_ids[-1], world.tags[0])):
            found.append(
                billing.get_usage(
                    db,
                    caller=world.caller,
                    start=start,
                    end=end,
                    interval=scenario.interval,
                    tz=scenario.tz,
                    customer_id=customer_id,
                    tag=tag,
                )
            )
        for tag in world.tags:
            for customer_id in (None, world.customer_ids[0]):
                found.append(
                    analytics.step_funnel(
                        db,
                        caller=world.caller,
                        tag=tag,
                        version=None,
                        start=start,
                        end=end,
                        customer_id=customer_id,
                    )
                )
    return found


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_rollup_backed_answers_equal_the_per_step_tables_answers(
    db: Session, scenario: Scenario
) -> None:
    with db.begin_nested() as example:
        world = build(db, scenario)
        send(db, world, scenario.before)
        before = answers(db, world, scenario)

        roll_up(db, now=ROLL_UP_AT)
        assert answers(db, world, scenario) == before

        send(db, world, scenario.after)  # into closed, rolled-up days: marked, read live
        expected = live(db, lambda: answers(db, world, scenario))
        assert answers(db, world, scenario) == expected

        roll_up(db, now=ROLL_UP_AT)
        assert mark_count(db) == 0
        assert answers(db, world, scenario) == expected

        prune_every_event(db)  # but unresolved errors: billing and analytics never read them
        assert answers(db, world, scenario) == expected
        example.rollback()


def prune_every_event(db: Session) -> None:
    pruning = retention.start_pruning(db, cutoff=datetime.now(UTC) + timedelta(days=1))
    while retention.prune_batch(db, pruning=pruning, limit=1000):
        pass


def test_the_roll_up_sums_closed_days_and_leaves_the_open_ones_live(db: Session) -> None:
    configuration, customer = create_configuration(db), create_customer(db)
    for created_at in (datetime(2026, 1, 5, 10, 7, tzinfo=UTC), datetime(2026, 1, 9, tzinfo=UTC)):
        create_job(db, configuration=configuration, customer=customer, created_at=created_at)
    roll_up(db, now=datetime(2026, 1, 8, 12, tzinfo=UTC))  # closes the days before January 7
    rows = db.execute(
        select(UsageRollup.level, UsageRollup.bucket_at, UsageRollup.jobs_started)
        .where(UsageRollup.customer_id == customer.id)
        .order_by(UsageRollup.bucket_at)
    ).all()
    assert sorted(rows) == sorted(
        [
            (UsageLevel.DAY, datetime(2026, 1, 5, tzinfo=UTC), 1),
            (UsageLevel.HOUR, datetime(2026, 1, 5, 10, tzinfo=UTC), 1),
            (UsageLevel.QUARTER_HOUR, datetime(2026, 1, 5, 10, tzinfo=UTC), 1),
        ]
    )
    usage = billing.get_usage(
        db,
        caller=Caller(create_admin(db)),
        start=datetime(2026, 1, 1, tzinfo=UTC),
        end=datetime(2026, 2, 1, tzinfo=UTC),
        interval=Interval.MONTH,
        customer_id=customer.id,
    )
    assert usage.totals.jobs_started == 2  # one rolled up, one live


def test_a_change_to_a_rolled_up_day_is_marked_and_read_live_until_rolled_again(
    db: Session,
) -> None:
    configuration, customer = create_configuration(db), create_customer(db)
    job = create_job(
        db,
        configuration=configuration,
        customer=customer,
        created_at=datetime(2026, 1, 5, 10, tzinfo=UTC),
    )
    roll_up(db, now=datetime(2026, 1, 20, tzinfo=UTC))
    assert mark_count(db) == 0
    db.execute(
        update(Job).where(Job.id == job.id).values(completed_at=datetime(2026, 1, 6, tzinfo=UTC))
    )
    assert mark_count(db) > 0
    caller = Caller(create_admin(db))

    def completed() -> int:
        return billing.get_usage(
            db,
            caller=caller,
            start=datetime(2026, 1, 1, tzinfo=UTC),
            end=datetime(2026, 2, 1, tzinfo=UTC),
            interval=Interval.DAY,
            customer_id=customer.id,
        ).totals.jobs_completed

    assert completed() == 1
    roll_up(db, now=datetime(2026, 1, 20, tzinfo=UTC))
    assert mark_count(db) == 0
    assert completed() == 1
    assert (db.scalar(select(func.sum(UsageRollup.jobs_completed))) or 0) >= 1


def test_the_triggers_let_through_every_row_a_closed_period_may_hold(db: Session) -> None:
    # The task closes the days that ended CLOSE_AFTER ago; a trigger that skips rows newer than
    # its own lag must not skip any of those, so its lag is at most CLOSE_AFTER.
    definitions = db.scalars(
        text("SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname LIKE 'mark_rollups_%'")
    ).all()
    assert len(definitions) == 9  # insert, update and delete on three tables
    for definition in definitions:
        lags = {int(days) for days in re.findall(r"'(\d+) days?'::interval", definition)}
        assert lags, definition
        assert all(timedelta(days=days) <= rollups.CLOSE_AFTER for days in lags)
