"""Demo data for development, organised as entity caches, `<MODEL>_DATA` and `seed_<model>`.

Seeding is idempotent: rows are found by their candidate key (a customer's name, a user's
email, an API key's owner and name) and only missing ones are added, so seeding twice adds
nothing the second time.
"""

import csv
import io
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.models import (
    ApiKey,
    Customer,
    EventKind,
    Job,
    JobConfiguration,
    JobConfigurationStep,
    JobStatus,
    Role,
    Scope,
    User,
)
from app.schemas.api_key import ApiKeyCreate
from app.schemas.customer import CustomerCreate
from app.schemas.event import EventCreate
from app.schemas.job import JobCreate
from app.schemas.job_configuration import JobConfigurationCreate, JobConfigurationStepCreate
from app.services import api_keys as api_key_service
from app.services import customers as customer_service
from app.services import events as event_service
from app.services import job_configurations as configuration_service
from app.services import jobs as job_service
from app.services import users as user_service
from app.services.access import Caller
from config import config

# Every seeded user's password: demo data only, never for a real deployment.
SEED_PASSWORD = "tracker-demo-password"  # noqa: S105
SEED_KEY_NAME = "Seed key"

# Entity caches: what is in the database, by candidate key, for later seeders to refer to.
customers: dict[str, Customer] = {}
users: dict[str, User] = {}
configurations: dict[str, JobConfiguration] = {}

CUSTOMER_DATA: list[dict[str, str]] = [
    {"name": "St. Mary's Hospital"},
    {"name": "Northside Imaging Clinic"},
    {"name": "Lakeview Medical Center"},
]

USER_DATA: list[dict[str, str | None]] = [
    {"email": "admin@tracker.example", "first_name": "Ada", "last_name": "Admin",
     "role": "admin", "customer": None},
    {"email": "mary@stmarys.example", "first_name": "Mary", "last_name": "Okafor",
     "role": "client", "customer": "St. Mary's Hospital"},
    {"email": "tom@stmarys.example", "first_name": "Tom", "last_name": "Lindqvist",
     "role": "client", "customer": "St. Mary's Hospital"},
    {"email": "nina@northside.example", "first_name": "Nina", "last_name": "Park",
     "role": "client", "customer": "Northside Imaging Clinic"},
    {"email": "leo@lakeview.example", "first_name": "Leo", "last_name": "Haddad",
     "role": "client", "customer": "Lakeview Medical Center"},
]  # fmt: skip


# (tag, name, points, cost) of each step.
IMAGE_PIPELINE_STEPS: list[tuple[str, str, int, str]] = [
    ("upload", "Upload study", 1, "0.0500"),
    ("validate", "Validate DICOM headers", 1, "0.0200"),
    ("de-identify", "De-identify", 2, "0.1500"),
    ("convert", "Convert to NIfTI", 1, "0.0500"),
    ("normalise", "Normalise intensities", 2, "0.1000"),
    ("register", "Register to atlas", 5, "0.4500"),
    ("denoise", "Denoise", 3, "0.2000"),
    ("segment", "Segment organs", 10, "1.2500"),
    ("measure", "Measure volumes", 3, "0.1500"),
    ("detect", "Detect lesions", 10, "1.5000"),
    ("classify", "Classify findings", 8, "1.1000"),
    ("grade", "Grade severity", 4, "0.4000"),
    ("quality-check", "Automated quality check", 2, "0.1000"),
    ("compare-prior", "Compare with prior study", 5, "0.6000"),
    ("annotate", "Annotate key images", 3, "0.2500"),
    ("summarise", "Summarise findings", 3, "0.3000"),
    ("report", "Draft report", 5, "0.7500"),
    ("review", "Radiologist review", 8, "2.5000"),
    ("sign-off", "Sign-off", 2, "0.5000"),
    ("archive", "Archive to PACS", 1, "0.0500"),
]

CONFIGURATION_DATA: list[dict[str, object]] = [
    {"tag": "image-analysis", "name": "Medical image analysis", "steps": IMAGE_PIPELINE_STEPS},
    {
        "tag": "demo",
        "name": "Three-step demo",
        "steps": [
            ("fetch", "Fetch input", 1, "0.1000"),
            ("process", "Process", 3, "0.9000"),
            ("deliver", "Deliver results", 1, "0.2500"),
        ],
    },
]


def seed_customers(session: Session) -> int:
    added = 0
    for data in CUSTOMER_DATA:
        customer = session.scalar(select(Customer).where(Customer.name == data["name"]))
        if customer is None:
            customer = customer_service.create_customer(session, customer_in=CustomerCreate(**data))
            added += 1
        customers[customer.name] = customer
    return added


def seed_users(session: Session) -> int:
    added = 0
    for data in USER_DATA:
        email = str(data["email"])
        user = user_service.get_user_by_email(session, email)
        if user is None:
            customer = customers[data["customer"]] if data["customer"] else None
            user = user_service.add_user(
                session,
                email=email,
                first_name=str(data["first_name"]),
                last_name=str(data["last_name"]),
                password=SEED_PASSWORD,
                role=Role(str(data["role"])),
                customer_id=customer.id if customer else None,
            )
            added += 1
        users[email] = user
    return added


def seed_configurations(session: Session) -> int:
    added = 0
    for data in CONFIGURATION_DATA:
        steps = data["steps"]
        assert isinstance(steps, list)
        config_in = JobConfigurationCreate(
            tag=str(data["tag"]),
            name=str(data["name"]),
            steps=[
                JobConfigurationStepCreate(tag=tag, name=name, points=points, cost=Decimal(cost))
                for tag, name, points, cost in steps
            ],
        )
        configuration, created = configuration_service.create_configuration(
            session, config_in=config_in
        )
        added += created
        configurations[configuration.tag] = configuration
    return added


# A few months of jobs for the demo customers, so billing and analytics have content.
HISTORY_JOBS = 240
HISTORY_MONTHS = 4
HISTORY_PREFIX = "history"

# How far each demo job gets: (status wanted, how many steps it completes).
DEMO_JOB_PLAN: list[tuple[JobStatus, int]] = [
    (JobStatus.PENDING, 0),
    (JobStatus.RUNNING, 7),
    (JobStatus.COMPLETED, 20),
    (JobStatus.FAILED, 9),
    (JobStatus.CANCELLED, 4),
]


def seed_jobs(session: Session) -> int:
    """For every seeded customer, a job in every status, with its events, through the services
    the API uses (so the demo data obeys the same rules as real data)."""
    admin = Caller(user=users["admin@tracker.example"])
    pipeline = configurations["image-analysis"]
    step_tags = [tag for tag, _, _, _ in IMAGE_PIPELINE_STEPS]
    added = 0
    for customer in customers.values():
        for wanted, completed_steps in DEMO_JOB_PLAN:
            provider_job_id = f"demo-{customer.id}-{wanted.value}"
            job, created = job_service.create_job(
                session,
                caller=admin,
                job_in=JobCreate(
                    provider_job_id=provider_job_id,
                    tag=pipeline.tag,
                    customer_id=customer.id,
                    metadata={"study": f"ST-{customer.id:03d}-{wanted.value}"},
                ),
            )
            if not created:
                continue
            added += 1
            job = job_service.lock_job(session, caller=admin, job_id=job.id)
            events = [
                EventCreate(kind=EventKind.STEP, name=tag, event_id=f"{tag}-1")
                for tag in step_tags[:completed_steps]
            ]
            if wanted == JobStatus.FAILED:
                events.append(
                    EventCreate(
                        kind=EventKind.ERROR,
                        name=step_tags[completed_steps],
                        message="Model inference timed out",
                        metadata={"exit_code": 137},
                    )
                )
            event_service.apply_events(session, [(job, event_in) for event_in in events])
            if wanted == JobStatus.CANCELLED:
                job_service.cancel_job(session, caller=admin, job_id=job.id)
    return added


def seed_api_keys(session: Session) -> dict[str, str]:
    """One key per seeded user; answers the plaintext of the keys made now (shown only once)."""
    created = {}
    for email, user in users.items():
        existing = session.scalar(
            select(ApiKey.id).where(ApiKey.user_id == user.id, ApiKey.name == SEED_KEY_NAME)
        )
        if existing is None:
            _, plaintext = api_key_service.create_api_key(
                session,
                caller=Caller(user=user),
                key_in=ApiKeyCreate(name=SEED_KEY_NAME, scopes=[Scope.INGEST, Scope.READ]),
            )
            created[email] = plaintext
    return created


def seed_db(*, if_empty: bool = False) -> dict[str, int]:
    """Add whatever demo data is missing and commit; answer how many rows of each were added.

    With `if_empty`, leave a database that already has customers alone.
    """
    with config.database.SessionLocal() as session:
        if if_empty and session.scalar(select(Customer.id).limit(1)) is not None:
            print("Seed skipped: the database already has data")
            return {}
        added = {
            "customers": seed_customers(session),
            "users": seed_users(session),
            "configurations": seed_configurations(session),
        }
        added["jobs"] = seed_jobs(session)
        new_keys = seed_api_keys(session)
        added["api keys"] = len(new_keys)
        session.commit()
        has_history = session.scalar(
            select(Job.id).where(Job.provider_job_id.startswith(f"{HISTORY_PREFIX}-")).limit(1)
        )
    added["history jobs"] = 0
    if has_history is None:
        added["history jobs"] = seed_bulk(
            jobs=HISTORY_JOBS,
            events_per_job=20,
            months=HISTORY_MONTHS,
            customer_ids=[customer.id for customer in customers.values()],
            prefix=HISTORY_PREFIX,
            progress_bar=False,
        )["jobs"]
    print("Seeded: " + ", ".join(f"{count} {name}" for name, count in added.items()))
    if any(count for count in added.values()):
        print(f"Seeded users log in with the password {SEED_PASSWORD!r}")
    for email, plaintext in new_keys.items():
        print(f"API key for {email} (shown once): {plaintext}")
    return added


# Bulk data for benchmarks ------------------------------------------------------------------------

BULK_CHUNK_JOBS = 2000
# How bulk jobs end, with weights: most complete, some run, fail, wait or are cancelled.
BULK_OUTCOMES = [
    (JobStatus.COMPLETED, 60),
    (JobStatus.RUNNING, 15),
    (JobStatus.FAILED, 10),
    (JobStatus.CANCELLED, 10),
    (JobStatus.PENDING, 5),
]


@dataclass
class BulkJob:
    """One generated job: its row, its events, its step completions and its errors per step,
    consistent by construction with the rules the services apply one event at a time."""

    row: dict[str, object]
    events: list[tuple[object, ...]] = field(default_factory=list)
    completions: list[tuple[object, ...]] = field(default_factory=list)
    errors: list[tuple[object, ...]] = field(default_factory=list)


def _bulk_job(
    rng: random.Random,
    *,
    job_id: int,
    first_event_id: int,
    customer_id: int,
    configuration: JobConfiguration,
    created_at: datetime,
    events_per_job: int,
    prefix: str,
) -> BulkJob:
    steps = list(configuration.steps)
    outcome = rng.choices(
        [status for status, _ in BULK_OUTCOMES], [weight for _, weight in BULK_OUTCOMES]
    )[0]
    budget = 0 if outcome == JobStatus.PENDING else max(events_per_job, 1)
    if outcome == JobStatus.COMPLETED and budget < len(steps):
        outcome = JobStatus.RUNNING
    rng.shuffle(steps)
    if outcome == JobStatus.COMPLETED:
        done = steps
    else:
        done = steps[: rng.randint(0, min(budget, len(steps)) - 1)] if budget else []
    failing = steps[len(done)] if outcome == JobStatus.FAILED and len(done) < len(steps) else None

    # The events: each completed step once, then extras (retried errors, info, repeats)
    # until the budget is spent; a failed job ends with its unresolved error.
    plan: list[tuple[EventKind, JobConfigurationStep | None]] = [
        (EventKind.STEP, step) for step in done
    ]
    extras = budget - len(plan) - (1 if failing else 0)
    for _ in range(max(extras, 0)):
        if done and rng.random() < 0.2:
            # An error on a completed step, resolved by a retry that follows it.
            index = rng.randrange(len(plan) + 1)
            retried = rng.choice(done)
            plan.insert(index, (EventKind.ERROR, retried))
            plan.insert(index + 1, (EventKind.STEP, retried))
        elif done and rng.random() < 0.5:
            plan.append((EventKind.STEP, rng.choice(done)))
        else:
            plan.append((EventKind.INFO, None))
    plan = plan[: max(budget - (1 if failing else 0), 0)]
    if failing:
        plan.append((EventKind.ERROR, failing))

    bulk = BulkJob(row={})
    at = created_at
    completed: dict[int, tuple[datetime, int]] = {}
    error_count = 0
    open_errors: dict[int, list[list[object]]] = {}
    step_errors: dict[int, tuple[int, datetime, datetime]] = {}  # count, first, last
    events: list[list[object]] = []
    for offset, (kind, step) in enumerate(plan):
        at += timedelta(seconds=rng.randint(5, 600))
        event_id = first_event_id + offset
        event: list[object] = [
            event_id,
            job_id,
            kind.value,
            step.id if step else None,
            step.tag if step else None,
            f"bulk-{event_id}",
            at,
            at,
            None,
        ]
        if kind == EventKind.STEP and step is not None:
            completed.setdefault(step.id, (at, event_id))
            for error in open_errors.pop(step.id, []):
                error[8] = at  # resolved by this retry
        elif kind == EventKind.ERROR and step is not None:
            error_count += 1
            open_errors.setdefault(step.id, []).append(event)
            count, first, _ = step_errors.get(step.id, (0, at, at))
            step_errors[step.id] = (count + 1, first, at)
        events.append(event)
    bulk.events = [tuple(event) for event in events]
    unresolved = sum(len(errors) for errors in open_errors.values())
    by_id = {step.id: step for step in steps}
    previous = created_at
    # Timed as apply_events times them: in completion order, then step order.
    for completed_at, step_id, event_id in sorted(
        (completed_at, step_id, event_id) for step_id, (completed_at, event_id) in completed.items()
    ):
        step = by_id[step_id]
        since = (completed_at - previous).total_seconds()
        bulk.completions.append(
            (job_id, step_id, customer_id, configuration.id, event_id, completed_at,
             step.points, step.cost, created_at, since)
        )  # fmt: skip
        previous = completed_at
    bulk.errors = [
        (job_id, step_id, customer_id, configuration.id, count, first, last, created_at,
         step_id in completed)
        for step_id, (count, first, last) in step_errors.items()
    ]  # fmt: skip
    steps_completed = len(completed)
    last_step_completed_at = max((time for time, _ in completed.values()), default=None)
    status = event_service.job_status(
        cancelled=outcome == JobStatus.CANCELLED,
        unresolved_errors=unresolved,
        steps_completed=steps_completed,
        step_count=len(steps),
        event_count=len(plan),
    )
    bulk.row = {
        "id": job_id,
        "provider_job_id": f"{prefix}-{job_id}",
        "customer_id": customer_id,
        "configuration_id": configuration.id,
        "status": status.value,
        "step_count": len(steps),
        "steps_completed": steps_completed,
        "total_points": configuration.total_points,
        "completed_points": sum(by_id[step_id].points for step_id in completed),
        "cost": sum((by_id[step_id].cost for step_id in completed), Decimal(0)),
        "event_count": len(plan),
        "error_count": error_count,
        "unresolved_error_count": unresolved,
        "started_at": bulk.events[0][6] if bulk.events else None,
        "last_event_at": at if plan else None,
        "completed_at": last_step_completed_at if steps_completed == len(steps) else None,
        "last_step_completed_at": last_step_completed_at,
        "cancelled_at": at + timedelta(minutes=1) if status == JobStatus.CANCELLED else None,
        "created_at": created_at,
        "updated_at": at,
    }
    return bulk


def _skip_foreign_key_checks(session: Session) -> bool:
    """Rows made here are consistent by construction; where the role may (a superuser, as on the
    embedded server), skip the per-row foreign key triggers for this transaction: COPY is then
    several times faster."""
    try:
        with session.begin_nested():
            session.execute(text("SET LOCAL session_replication_role = replica"))
    except DBAPIError:
        return False
    return True


def _reserve_ids(session: Session, table: str, count: int) -> int:
    """The first of `count` consecutive ids taken from the table's identity sequence."""
    last = session.scalar(
        text(
            "SELECT setval(pg_get_serial_sequence(:table, 'id'), "
            "nextval(pg_get_serial_sequence(:table, 'id')) + :count - 1)"
        ),
        {"table": table, "count": count},
    )
    assert last is not None
    return int(last) - count + 1


def _copy(
    session: Session, table: str, columns: Sequence[str], rows: Iterable[Sequence[object]]
) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow(["" if value is None else value for value in row])
    buffer.seek(0)
    cursor = session.connection().connection.cursor()
    cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", buffer)


JOB_COLUMNS = [
    "id", "provider_job_id", "customer_id", "configuration_id", "status", "step_count",
    "steps_completed", "total_points", "completed_points", "cost", "event_count", "error_count",
    "unresolved_error_count", "started_at", "last_event_at", "completed_at", "cancelled_at",
    "created_at", "updated_at", "last_step_completed_at",
]  # fmt: skip
EVENT_COLUMNS = [
    "id", "job_id", "kind", "step_id", "step_tag", "event_id", "occurred_at", "received_at",
    "resolved_at",
]  # fmt: skip
COMPLETION_COLUMNS = [
    "job_id", "step_id", "customer_id", "configuration_id", "event_id", "completed_at", "points",
    "cost", "job_created_at", "seconds_since_previous",
]  # fmt: skip
STEP_ERROR_COLUMNS = [
    "job_id", "step_id", "customer_id", "configuration_id", "error_count", "first_error_at",
    "last_error_at", "job_created_at", "step_completed",
]  # fmt: skip


def seed_bulk(
    *,
    jobs: int,
    events_per_job: int,
    customer_count: int = 20,
    months: int = 12,
    seed: int = 1,
    customer_ids: Sequence[int] = (),
    prefix: str = "bulk",
    progress_bar: bool = True,
) -> dict[str, int]:
    """Add `jobs` jobs with about `events_per_job` events each, spread over the last `months`
    months and `customer_count` customers named "Bulk customer NN" (or over `customer_ids`),
    with COPY. Each run adds more (it is not idempotent)."""
    from tqdm import tqdm

    rng = random.Random(seed)
    with config.database.SessionLocal() as session:
        seed_configurations(session)
        bulk_customers = list(customer_ids)
        for number in range(1, 0 if customer_ids else customer_count + 1):
            name = f"Bulk customer {number:02d}"
            customer = session.scalar(select(Customer).where(Customer.name == name))
            if customer is None:
                customer = customer_service.create_customer(
                    session, customer_in=CustomerCreate(name=name)
                )
            bulk_customers.append(customer.id)
        pipelines = [
            configuration_service.get_configuration(session, tag=tag)
            for tag in ("image-analysis", "demo")
        ]
        session.commit()

        end = datetime.now(UTC)
        start = end - timedelta(days=30 * months)
        span = (end - start).total_seconds()
        totals = {"jobs": 0, "events": 0}
        checks_skipped = False
        started = time.perf_counter()
        with tqdm(
            total=jobs, unit="job", desc=f"{prefix} seed", disable=not progress_bar
        ) as progress:
            for chunk_start in range(0, jobs, BULK_CHUNK_JOBS):
                count = min(BULK_CHUNK_JOBS, jobs - chunk_start)
                checks_skipped = _skip_foreign_key_checks(session)
                first_job = _reserve_ids(session, "jobs", count)
                first_event = _reserve_ids(session, "events", count * (events_per_job + 2))
                generated = []
                for offset in range(count):
                    generated.append(
                        _bulk_job(
                            rng,
                            job_id=first_job + offset,
                            first_event_id=first_event + offset * (events_per_job + 2),
                            customer_id=rng.choice(bulk_customers),
                            configuration=pipelines[0] if rng.random() < 0.8 else pipelines[1],
                            created_at=start + timedelta(seconds=rng.random() * span),
                            events_per_job=events_per_job,
                            prefix=prefix,
                        )
                    )
                rows = ([job.row[column] for column in JOB_COLUMNS] for job in generated)
                _copy(session, "jobs", JOB_COLUMNS, rows)
                events = (event for job in generated for event in job.events)
                _copy(session, "events", EVENT_COLUMNS, events)
                completions = (row for job in generated for row in job.completions)
                _copy(session, "job_step_completions", COMPLETION_COLUMNS, completions)
                step_errors = (row for job in generated for row in job.errors)
                _copy(session, "job_step_errors", STEP_ERROR_COLUMNS, step_errors)
                session.commit()
                totals["jobs"] += count
                totals["events"] += sum(len(job.events) for job in generated)
                progress.update(count)
        elapsed = time.perf_counter() - started
        session.execute(text("ANALYZE jobs, events, job_step_completions, job_step_errors"))
        session.commit()
    print(
        f"Bulk seeded {totals['jobs']} jobs and {totals['events']} events in {elapsed:.1f} s "
        f"({totals['events'] / max(elapsed, 1e-9):,.0f} events/s"
        + (", foreign key triggers skipped)" if checks_skipped else ")")
    )
    return totals
