"""The job contract as the database applies it, against a plain model of the contract written
here: random streams of single events and batches, with replays, out-of-order times, errors and
their retries, unknown steps and cancellations, must leave every job, its per-step records and
its events exactly as the model says."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.models import Event, EventKind, JobStatus, JobStepCompletion, JobStepError
from app.schemas.event import EventCreate
from app.schemas.job import JobCreate
from app.services import job_contract, jobs
from app.services.access import Caller
from tests.factories import create_admin, create_configuration, create_customer, unique

STEPS = [("a", 1, Decimal("0.5000")), ("b", 2, Decimal("1.2500")), ("c", 3, Decimal("0.0100"))]
TAGS = [tag for tag, _, _ in STEPS]
T0 = datetime(2026, 3, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Report:
    """One event as a script sends it; the same event_id always carries the same content, as a
    retry does."""

    job: int
    kind: EventKind
    name: str | None
    event_id: str | None
    minutes: int | None  # occurred_at, in minutes after T0

    def event(self) -> EventCreate:
        at = T0 + timedelta(minutes=self.minutes) if self.minutes is not None else None
        return EventCreate(kind=self.kind, name=self.name, event_id=self.event_id, occurred_at=at)


@st.composite
def reports(draw: st.DrawFn) -> Report:
    kind = draw(st.sampled_from(list(EventKind)))
    names = [*TAGS, "zz"] + ([] if kind == EventKind.STEP else [None])
    name = draw(st.sampled_from(names))
    minutes = draw(st.none() | st.integers(-30, 30))
    return Report(draw(st.integers(0, 1)), kind, name, None, minutes)


@st.composite
def streams(draw: st.DrawFn) -> list[list[Report | int]]:
    """Calls, in order: each a batch of reports (one report: a single event) or, as an int,
    the cancellation of that job. Some reports are replays of earlier ones."""
    sent: list[Report] = []
    calls: list[list[Report | int]] = []
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.integers(0, 9)) == 0:
            calls.append([draw(st.integers(0, 1))])
            continue
        batch: list[Report | int] = []
        for _ in range(draw(st.integers(1, 5))):
            if len(sent) > 0 and draw(st.booleans()):
                report = sent[draw(st.integers(0, len(sent) - 1))]  # a replay
            else:
                report = draw(reports())
                if draw(st.booleans()):
                    report = Report(
                        report.job, report.kind, report.name, unique("k"), report.minutes
                    )
            sent.append(report)
            batch.append(report)
        calls.append(batch)
    return calls


@dataclass
class ModelJob:
    """The contract, one event at a time."""

    created_at: datetime
    keys: set[str] = field(default_factory=set)
    cancelled: bool = False
    events: int = 0
    errors: int = 0
    open_errors: list[tuple[int, str | None]] = field(default_factory=list)  # (number, step)
    resolved: set[int] = field(default_factory=set)
    completed: dict[str, datetime] = field(default_factory=dict)
    step_errors: dict[str, list[datetime]] = field(default_factory=dict)

    def apply(self, report: Report, now: datetime) -> str:
        if report.event_id is not None and report.event_id in self.keys:
            return "duplicate"
        if self.cancelled or (report.name is not None and report.name not in TAGS):
            return "rejected"
        if report.event_id is not None:
            self.keys.add(report.event_id)
        number, self.events = self.events, self.events + 1
        at = T0 + timedelta(minutes=report.minutes) if report.minutes is not None else now
        if report.kind == EventKind.ERROR:
            self.errors += 1
            self.open_errors.append((number, report.name))
            if report.name is not None:
                self.step_errors.setdefault(report.name, []).append(at)
        elif report.kind == EventKind.STEP:
            assert report.name is not None
            self.completed[report.name] = min(self.completed.get(report.name, at), at)
            self._resolve(lambda step: step == report.name)
            if len(self.completed) == len(TAGS):
                self._resolve(lambda step: step is None)
        return "created"

    def _resolve(self, which: object) -> None:
        assert callable(which)
        for number, step in list(self.open_errors):
            if which(step):
                self.open_errors.remove((number, step))
                self.resolved.add(number)

    def status(self) -> JobStatus:
        if self.cancelled:
            return JobStatus.CANCELLED
        if self.open_errors:
            return JobStatus.FAILED
        if len(self.completed) == len(TAGS):
            return JobStatus.COMPLETED
        return JobStatus.RUNNING if self.events else JobStatus.PENDING

    def row(self) -> dict[str, object]:
        points = {tag: (p, c) for tag, p, c in STEPS}
        last = max(self.completed.values(), default=None)
        return {
            "status": self.status(),
            "steps_completed": len(self.completed),
            "completed_points": sum(points[tag][0] for tag in self.completed),
            "cost": sum((points[tag][1] for tag in self.completed), Decimal(0)),
            "event_count": self.events,
            "error_count": self.errors,
            "unresolved_error_count": len(self.open_errors),
            "last_step_completed_at": last,
            "completed_at": last if len(self.completed) == len(TAGS) else None,
        }

    def completions(self, step_ids: dict[str, int]) -> dict[str, tuple[datetime, float]]:
        previous, timed = self.created_at, {}
        for at, tag in sorted((at, tag) for tag, at in self.completed.items()):
            timed[tag] = (at, (at - previous).total_seconds())
            previous = at
        assert sorted(step_ids, key=step_ids.__getitem__) == TAGS  # ids follow the step order
        return timed


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(calls=streams())
def test_the_database_applies_events_as_the_contract_says(
    db: Session, calls: list[list[Report | int]]
) -> None:
    nested = db.begin_nested()
    try:
        configuration = create_configuration(db, steps=STEPS)
        caller, customer = Caller(user=create_admin(db)), create_customer(db)
        made = [
            jobs.create_job(
                db,
                caller=caller,
                job_in=JobCreate(
                    provider_job_id=unique("job"), tag=configuration.tag, customer_id=customer.id
                ),
            )[0]
            for _ in range(2)
        ]
        now = db.scalar(text("SELECT now()"))
        assert now is not None
        model = [ModelJob(job.created_at) for job in made]
        for call in calls:
            if isinstance(call[0], int):
                [index] = call
                assert isinstance(index, int)
                jobs.cancel_jobs(db, job_ids=[made[index].id], at=now)
                model[index].cancelled = model[index].status() != JobStatus.COMPLETED
                continue
            sent = [report for report in call if isinstance(report, Report)]
            to_apply = [job_contract.EventToApply(r.event(), job_id=made[r.job].id) for r in sent]
            if len(to_apply) == 1:
                row = job_contract.apply_event(db, to_apply[0], visible_customer_id=None)
                results = [row["outcome"]]
            else:
                results = [
                    each.result
                    for each in job_contract.apply_events(db, to_apply, visible_customer_id=None)
                ]
            assert results == [model[r.job].apply(r, now) for r in sent]

        step_ids = {step.tag: step.id for step in configuration.steps}
        tags = {step_id: tag for tag, step_id in step_ids.items()}
        for job, expected in zip(made, model, strict=True):
            db.refresh(job)
            assert {name: getattr(job, name) for name in expected.row()} == expected.row()
            completions = {
                tags[row.step_id]: (row.completed_at, round(row.seconds_since_previous, 6))
                for row in db.scalars(
                    select(JobStepCompletion).where(JobStepCompletion.job_id == job.id)
                )
            }
            timed = expected.completions(step_ids)
            assert completions == {tag: (at, round(s, 6)) for tag, (at, s) in timed.items()}
            step_errors = {
                tags[row.step_id]: (
                    row.error_count,
                    row.first_error_at,
                    row.last_error_at,
                    row.step_completed,
                )
                for row in db.scalars(select(JobStepError).where(JobStepError.job_id == job.id))
            }
            assert step_errors == {
                tag: (len(times), min(times), max(times), tag in expected.completed)
                for tag, times in expected.step_errors.items()
            }
            stored = db.scalars(
                select(Event).where(Event.job_id == job.id).order_by(Event.id)
            ).all()
            assert [event.resolved_at is not None for event in stored] == [
                number in expected.resolved for number in range(expected.events)
            ]
    finally:
        nested.rollback()


def test_a_job_is_locked_and_read_once_per_call(db: Session) -> None:
    """The same job named by id and by provider_job_id in one call is one job."""
    configuration = create_configuration(db, steps=STEPS)
    caller, customer = Caller(user=create_admin(db)), create_customer(db)
    job, _ = jobs.create_job(
        db,
        caller=caller,
        job_in=JobCreate(
            provider_job_id=unique("job"), tag=configuration.tag, customer_id=customer.id
        ),
    )
    step = EventCreate(kind=EventKind.STEP, name="a")
    applied = job_contract.apply_events(
        db,
        [
            job_contract.EventToApply(step, job_id=job.id),
            job_contract.EventToApply(step, provider_job_id=job.provider_job_id),
        ],
        visible_customer_id=None,
    )
    assert [(each.result, each.job_id) for each in applied] == [("created", job.id)] * 2
    db.refresh(job)
    assert (job.event_count, job.steps_completed) == (2, 1)
