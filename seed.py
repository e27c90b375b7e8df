"""Demo data for development, organised as `<MODEL>_DATA` and `seed_<model>`, and bulk data for
benchmarks.

Seeding is idempotent: rows are found by their candidate key (a customer's name, a user's
email, an API key's owner and name) and only missing ones are added, so seeding twice adds
nothing the second time. Each seeder answers the rows it found or made, by candidate key, for the
next one to refer to. Events, demo or bulk, go through the job contract (`job_contract`), as the
API's do.
"""

import csv
import io
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Generic, TypeVar

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
    WebhookEndpoint,
    WebhookEventType,
)
from app.schemas.api_key import ApiKeyCreate
from app.schemas.customer import CustomerCreate
from app.schemas.event import EventCreate
from app.schemas.job import JobCreate
from app.schemas.job_configuration import JobConfigurationCreate, JobConfigurationStepCreate
from app.schemas.webhook import WebhookCreate
from app.services import api_keys as api_key_service
from app.services import customers as customer_service
from app.services import deadlines, job_contract, rollups
from app.services import events as event_service
from app.services import job_configurations as configuration_service
from app.services import jobs as job_service
from app.services import users as user_service
from app.services import webhooks as webhook_service
from app.services.access import Caller
from config import config

# Every seeded user's password: demo data only, never for a real deployment.
SEED_PASSWORD = "tracker-demo-password"  # noqa: S105
SEED_KEY_NAME = "Seed key"

RowT = TypeVar("RowT")

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
        # Deadlines: the seed's stalled demo jobs are of this configuration.
        "start_timeout": 3600,
        "step_timeout": 900,
        "steps": [
            ("fetch", "Fetch input", 1, "0.1000"),
            ("process", "Process", 3, "0.9000"),
            ("deliver", "Deliver results", 1, "0.2500"),
        ],
    },
]


@dataclass
class Seeded(Generic[RowT]):
    """The rows a seeder found or made, by candidate key, and how many of them it made."""

    rows: dict[str, RowT] = field(default_factory=dict)
    added: int = 0


def seed_customers(session: Session) -> Seeded[Customer]:
    seeded = Seeded[Customer]()
    for data in CUSTOMER_DATA:
        customer = session.scalar(select(Customer).where(Customer.name == data["name"]))
        if customer is None:
            customer = customer_service.create_customer(session, customer_in=CustomerCreate(**data))
            seeded.added += 1
        seeded.rows[customer.name] = customer
    return seeded


def seed_users(session: Session, customers: dict[str, Customer]) -> Seeded[User]:
    seeded = Seeded[User]()
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
            seeded.added += 1
        seeded.rows[email] = user
    return seeded


def seed_configurations(session: Session) -> Seeded[JobConfiguration]:
    seeded = Seeded[JobConfiguration]()
    for data in CONFIGURATION_DATA:
        steps = data["steps"]
        assert isinstance(steps, list)
        config_in = JobConfigurationCreate(
            tag=str(data["tag"]),
            name=str(data["name"]),
            start_timeout=data.get("start_timeout"),  # type: ignore[arg-type]
            step_timeout=data.get("step_timeout"),  # type: ignore[arg-type]
            steps=[
                JobConfigurationStepCreate(tag=tag, name=name, points=points, cost=Decimal(cost))
                for tag, name, points, cost in steps
            ],
        )
        configuration, created = configuration_service.create_configuration(
            session, config_in=config_in
        )
        seeded.added += created
        seeded.rows[configuration.tag] = configuration
    return seeded


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


def seed_jobs(
    session: Session, *, admin: User, customers: Iterable[Customer], pipeline: JobConfiguration
) -> int:
    """For every seeded customer, a job in every status, with its events, through the services
    the API uses (so the demo data obeys the same rules as real data)."""
    caller = Caller(user=admin)
    step_tags = [tag for tag, _, _, _ in IMAGE_PIPELINE_STEPS]
    added = 0
    for customer in customers:
        for wanted, completed_steps in DEMO_JOB_PLAN:
            provider_job_id = f"demo-{customer.id}-{wanted.value}"
            job, created = job_service.create_job(
                session,
                caller=caller,
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
            job = job_service.lock_job(session, caller=caller, job_id=job.id)
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
            event_service.apply_to_jobs(session, [(job, event_in) for event_in in events])
            if wanted == JobStatus.CANCELLED:
                job_service.cancel_job(session, caller=caller, job_id=job.id)
    return added


def seed_stalled_jobs(
    session: Session, *, admin: User, customers: Iterable[Customer], demo: JobConfiguration
) -> int:
    """For every seeded customer, a job of the demo configuration whose script reported its
    first step an hour ago and then went quiet: past its step timeout, the sweep stalls it."""
    caller = Caller(user=admin)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    added = 0
    for customer in customers:
        job, created = job_service.create_job(
            session,
            caller=caller,
            job_in=JobCreate(
                provider_job_id=f"demo-{customer.id}-stalled", tag=demo.tag, customer_id=customer.id
            ),
        )
        if not created:
            continue
        added += 1
        step = EventCreate(kind=EventKind.STEP, name="fetch", event_id="fetch-1")
        job_contract.apply_events(
            session,
            [job_contract.EventToApply(step, job_id=job.id, received_at=an_hour_ago)],
            visible_customer_id=None,
        )
    deadlines.sweep_deadlines(session, now=datetime.now(UTC), limit=len(CUSTOMER_DATA))
    return added


# Nothing listens on this port (discard): in development the delivery log shows the retries.
SEED_WEBHOOK_URL = "http://127.0.0.1:9/tracker-webhooks"


def seed_webhooks(session: Session, *, admin: User) -> int:
    """The provider's endpoint for every customer's notifications, at a port where nothing
    listens. Made before the jobs, so that their endings are queued for it. Only where plain
    http to this machine is allowed (development, test)."""
    settings = config.settings
    if not (settings.webhook_allow_http and settings.webhook_allow_private_addresses):
        return 0
    exists = session.scalar(
        select(WebhookEndpoint.id).where(WebhookEndpoint.url == SEED_WEBHOOK_URL).limit(1)
    )
    if exists is not None:
        return 0
    webhook_service.create_webhook(
        session,
        caller=Caller(user=admin),
        webhook_in=WebhookCreate(
            url=SEED_WEBHOOK_URL,
            event_types=list(WebhookEventType),
            description="Demo receiver that is never up: its deliveries are retried",
        ),
    )
    return 1


def _seed_scopes(user: User) -> list[Scope]:
    """Ingest and read; an admin's key may push configurations too (`trackerapi configs push`)."""
    scopes = [Scope.INGEST, Scope.READ]
    return [*scopes, Scope.CONFIGURE] if user.is_admin else scopes


def seed_api_keys(session: Session, users: dict[str, User]) -> dict[str, str]:
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
                key_in=ApiKeyCreate(name=SEED_KEY_NAME, scopes=_seed_scopes(user)),
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
        customers = seed_customers(session)
        users = seed_users(session, customers.rows)
        configurations = seed_configurations(session)
        added = {
            "customers": customers.added,
            "users": users.added,
            "configurations": configurations.added,
        }
        admin = users.rows["admin@tracker.example"]
        seed_webhooks(session, admin=admin)
        added["jobs"] = seed_jobs(
            session,
            admin=admin,
            customers=customers.rows.values(),
            pipeline=configurations.rows["image-analysis"],
        ) + seed_stalled_jobs(
            session,
            admin=admin,
            customers=customers.rows.values(),
            demo=configurations.rows["demo"],
        )
        new_keys = seed_api_keys(session, users.rows)
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
            customer_ids=[customer.id for customer in customers.rows.values()],
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

Report = tuple[EventKind, JobConfigurationStep | None]


@dataclass(frozen=True)
class BulkJob:
    """One generated job: its creation, what its script reports and when, and whether it is
    cancelled at the end. What the reports make of the job is the job contract's business."""

    id: int
    customer_id: int
    configuration: JobConfiguration
    created_at: datetime
    reports: list[tuple[EventKind, JobConfigurationStep | None, datetime]]
    cancelled: bool

    @property
    def last_report_at(self) -> datetime:
        return self.reports[-1][2] if self.reports else self.created_at


def _script(
    rng: random.Random, steps: Sequence[JobConfigurationStep], outcome: JobStatus, budget: int
) -> list[Report]:
    """What a script reports on its way to `outcome`, in about `budget` events: each step it
    completes once, in a random order, with extras (an error then its successful retry, a step
    repeated, a note) until the budget is spent; a job bound to fail ends with an error at the
    first step it did not complete."""
    order = list(steps)
    rng.shuffle(order)
    if outcome == JobStatus.COMPLETED:
        done = order
    else:
        done = order[: rng.randint(0, min(budget, len(order)) - 1)] if budget else []
    failing = order[len(done)] if outcome == JobStatus.FAILED and len(done) < len(order) else None
    reports: list[Report] = [(EventKind.STEP, step) for step in done]
    for _ in range(max(budget - len(reports) - (1 if failing else 0), 0)):
        if done and rng.random() < 0.2:
            index = rng.randrange(len(reports) + 1)
            retried = rng.choice(done)
            reports[index:index] = [(EventKind.ERROR, retried), (EventKind.STEP, retried)]
        elif done and rng.random() < 0.5:
            reports.append((EventKind.STEP, rng.choice(done)))
        else:
            reports.append((EventKind.INFO, None))
    reports = reports[: max(budget - (1 if failing else 0), 0)]
    if failing:
        reports.append((EventKind.ERROR, failing))
    return reports


def _bulk_job(
    rng: random.Random,
    *,
    job_id: int,
    customer_id: int,
    configuration: JobConfiguration,
    created_at: datetime,
    events_per_job: int,
) -> BulkJob:
    outcome = rng.choices(
        [status for status, _ in BULK_OUTCOMES], [weight for _, weight in BULK_OUTCOMES]
    )[0]
    budget = 0 if outcome == JobStatus.PENDING else max(events_per_job, 1)
    if outcome == JobStatus.COMPLETED and budget < configuration.step_count:
        outcome = JobStatus.RUNNING
    at = created_at
    reports = []
    for kind, step in _script(rng, configuration.steps, outcome, budget):
        at += timedelta(seconds=rng.randint(5, 600))
        reports.append((kind, step, at))
    return BulkJob(
        job_id, customer_id, configuration, created_at, reports, outcome == JobStatus.CANCELLED
    )


def _skip_triggers(session: Session) -> bool:
    """The rows made here refer to rows that exist; where the role may (a superuser, as on the
    embedded server), skip every row trigger for this transaction (`session_replication_role =
    replica`): the foreign key checks, which makes inserting several times faster, and the
    marking of rolled-up periods, so the rollups must be made anew afterwards."""
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


NEW_JOB_COLUMNS = [
    "id", "provider_job_id", "customer_id", "configuration_id", "step_count", "total_points",
    "created_at", "updated_at",
]  # fmt: skip


def _create_jobs(session: Session, jobs: Sequence[BulkJob], prefix: str) -> None:
    """The jobs as POST /jobs leaves them (no events yet), at their creation times."""
    rows = (
        [job.id, f"{prefix}-{job.id}", job.customer_id, job.configuration.id,
         job.configuration.step_count, job.configuration.total_points, job.created_at,
         job.created_at]
        for job in jobs
    )  # fmt: skip
    _copy(session, "jobs", NEW_JOB_COLUMNS, rows)


def _report(session: Session, jobs: Sequence[BulkJob]) -> int:
    """Every job's reports, as received at the times they happened, through the job contract
    in one call; then the cancellations. Answers the number of events stored."""
    events = [
        job_contract.EventToApply(
            EventCreate.model_construct(
                kind=kind,
                name=step.tag if step else None,
                event_id=f"bulk-{job.id}-{number}",
                occurred_at=at,
            ),
            job_id=job.id,
            received_at=at,
        )
        for job in jobs
        for number, (kind, step, at) in enumerate(job.reports)
    ]
    applied = job_contract.apply_events(session, events, visible_customer_id=None)
    assert all(each.result == "created" for each in applied)
    for job in jobs:
        if job.cancelled:
            job_service.cancel_jobs(
                session, job_ids=[job.id], at=job.last_report_at + timedelta(minutes=1)
            )
    return len(applied)


def _analyze(session: Session) -> None:
    session.execute(text("ANALYZE jobs, events, job_step_completions, job_step_errors"))
    session.commit()


def _bulk_customers(session: Session, customer_count: int) -> list[int]:
    """The ids of the customers "Bulk customer NN", made if missing."""
    ids = []
    for number in range(1, customer_count + 1):
        name = f"Bulk customer {number:02d}"
        customer = session.scalar(select(Customer).where(Customer.name == name))
        if customer is None:
            customer = customer_service.create_customer(
                session, customer_in=CustomerCreate(name=name)
            )
        ids.append(customer.id)
    return ids


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
    a chunk of jobs per transaction. Each run adds more (it is not idempotent)."""
    from tqdm import tqdm

    rng = random.Random(seed)
    with config.database.SessionLocal() as session:
        seed_configurations(session)
        owners = list(customer_ids) or _bulk_customers(session, customer_count)
        pipelines = [
            configuration_service.get_configuration(session, tag=tag)
            for tag in ("image-analysis", "demo")
        ]
        session.commit()

        end = datetime.now(UTC)
        start = end - timedelta(days=30 * months)
        span = (end - start).total_seconds()
        totals = {"jobs": 0, "events": 0}
        triggers_skipped = False
        analyzed_at = 0
        started = time.perf_counter()
        with tqdm(total=jobs, unit="job", desc=f"{prefix} seed", disable=not progress_bar) as bar:
            for chunk_start in range(0, jobs, BULK_CHUNK_JOBS):
                count = min(BULK_CHUNK_JOBS, jobs - chunk_start)
                # A chunk is thousands of jobs at once, not a request: no request's time limit.
                session.execute(text("SET LOCAL statement_timeout = 0"))
                triggers_skipped = _skip_triggers(session)
                first_id = _reserve_ids(session, "jobs", count)
                chunk = [
                    _bulk_job(
                        rng,
                        job_id=first_id + offset,
                        customer_id=rng.choice(owners),
                        configuration=pipelines[0] if rng.random() < 0.8 else pipelines[1],
                        created_at=start + timedelta(seconds=rng.random() * span),
                        events_per_job=events_per_job,
                    )
                    for offset in range(count)
                ]
                _create_jobs(session, chunk, prefix)
                totals["events"] += _report(session, chunk)
                session.commit()
                totals["jobs"] += count
                bar.update(count)
                # Each time the jobs have doubled: where autovacuum is off (or lags), statistics
                # from a small table (per-job counts of rows) would lead the contract's plans
                # astray as the tables grow, and every chunk would take longer than the last.
                if totals["jobs"] >= 2 * analyzed_at:
                    _analyze(session)
                    analyzed_at = totals["jobs"]
        elapsed = time.perf_counter() - started
        if triggers_skipped:  # the rollups' marks too: roll up anew
            rollups.forget(session)
        _analyze(session)
    print(
        f"Bulk seeded {totals['jobs']} jobs and {totals['events']} events in {elapsed:.1f} s "
        f"({totals['events'] / max(elapsed, 1e-9):,.0f} events/s"
        + (", triggers skipped)" if triggers_skipped else ")")
    )
    return totals
