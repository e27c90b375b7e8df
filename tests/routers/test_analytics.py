"""Analytics: jobs by status, configuration and period; the steps funnel; usage per customer;
and the per-step error counts the job contract keeps so that none of it reads events."""

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.internal.quantiles import RELATIVE_ACCURACY, RESOLUTION
from app.models import (
    Job,
    JobConfigurationStep,
    JobStepCompletion,
    Scope,
)
from tests.helpers.capture import captured_statements
from tests.helpers.factories import create_configuration, create_customer
from tests.helpers.job_records import (
    funnel_facts,
    funnel_facts_worked_out,
    step_errors_from_events,
    step_errors_table,
)
from tests.helpers.scripts import PIPELINE, Script, admin_script, client_script, new_job, pipeline

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
STATUSES = ["pending", "running", "completed", "failed", "cancelled", "stalled"]


@pytest.fixture
def script(db: Session, client: TestClient) -> Script:
    return admin_script(db, client)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def place(db: Session, job: dict[str, Any], created_at: datetime) -> None:
    """Date a job's creation, before its events (their records copy the time)."""
    db.execute(update(Job).where(Job.id == job["id"]).values(created_at=created_at))
    db.flush()


def ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def step(script: Script, job: dict[str, Any], name: str, at: datetime | None = None) -> None:
    body: dict[str, Any] = {"kind": "step", "name": name}
    if at is not None:
        body["occurred_at"] = iso(at)
    assert script.event(job["id"], **body).status_code == 201


def error(script: Script, job: dict[str, Any], name: str | None = None, **extra: Any) -> Any:
    response = script.event(job["id"], kind="error", name=name, **extra)
    assert response.status_code in (200, 201), response.text
    return response


def estimated(exact: float) -> Any:
    """What the funnel may answer for an exact time: quantiles are read from a histogram."""
    return pytest.approx(exact, rel=RELATIVE_ACCURACY, abs=RESOLUTION)


def percentile_cont(values: Sequence[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# Jobs -------------------------------------------------------------------------------------------


def test_jobs_by_status_configuration_and_period(db: Session, script: Script) -> None:
    configuration, other = pipeline(db), create_configuration(db)
    customer = create_customer(db)
    jobs = [new_job(script, configuration, customer.id) for _ in range(5)]
    other_jobs = [new_job(script, other, customer.id) for _ in range(2)]
    completed, failed, running, cancelled, _pending = jobs
    for tag, _, _ in PIPELINE:
        step(script, completed, tag)
    error(script, failed, "segment")
    step(script, running, "upload")
    assert script.post(f"/jobs/{cancelled['id']}/cancel").status_code == 200
    step(script, other_jobs[0], "fetch")
    # Three days in the first week of March, one job in the next week, one in April; then two
    # jobs exactly on the range's bounds: `from` is in, `to` is out.
    days = [T0, T0, T0 + timedelta(days=1), T0 + timedelta(days=7), T0 + timedelta(days=31)]
    for job, created_at in zip(jobs, days, strict=True):
        place(db, job, created_at)
    start, end = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 4, 6, tzinfo=UTC)
    place(db, other_jobs[0], start)
    place(db, other_jobs[1], end)

    params = {"customer_id": customer.id, "from": iso(start), "to": iso(end)}
    body = ok(script.get("/analytics/jobs", interval="week", **params))
    assert body["total"] == 6
    assert body["by_status"] == [
        {"status": status, "count": count}
        for status, count in zip(STATUSES, [1, 2, 1, 1, 1, 0], strict=True)
    ]
    assert body["by_configuration"] == sorted(
        [
            {"tag": configuration.tag, "version": 1, "count": 5},
            {"tag": other.tag, "version": 1, "count": 1},
        ],
        key=lambda item: str(item["tag"]),
    )
    weeks = [iso(start + timedelta(weeks=n)) for n in range(5)]
    assert body["by_period"] == [
        {"period_start": week, "count": count}
        for week, count in zip(weeks, [4, 1, 0, 0, 1], strict=True)
    ]

    months = ok(script.get("/analytics/jobs", interval="month", **params))["by_period"]
    assert months == [
        {"period_start": "2026-03-01T00:00:00Z", "count": 5},
        {"period_start": "2026-04-01T00:00:00Z", "count": 1},
    ]
    by_day = ok(script.get("/analytics/jobs", interval="day", **params))["by_period"]
    assert len(by_day) == 35
    assert [item["count"] for item in by_day[:3]] == [3, 1, 0]
    assert by_day[0]["period_start"] == "2026-03-02T00:00:00Z"

    only_pipeline = ok(script.get("/analytics/jobs", tag=configuration.tag, **params))
    assert only_pipeline["total"] == 5
    assert [item["tag"] for item in only_pipeline["by_configuration"]] == [configuration.tag]
    assert ok(script.get("/analytics/jobs", tag="no-such-tag", **params))["total"] == 0


def test_periods_are_half_open_in_utc_and_cover_partial_ends(db: Session, script: Script) -> None:
    configuration, customer = pipeline(db), create_customer(db)
    moments = [
        datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, tzinfo=UTC),
        datetime(2026, 1, 31, 23, 30, tzinfo=UTC),  # 2026-02-01 00:30 in Paris: still January
    ]
    for created_at in moments:
        place(db, new_job(script, configuration, customer.id), created_at)
    body = ok(
        script.get(
            "/analytics/jobs",
            customer_id=customer.id,
            interval="month",
            **{"from": "2025-12-15T00:00:00+01:00", "to": "2026-02-10T00:00:00Z"},
        )
    )
    assert body["by_period"] == [
        {"period_start": "2025-12-01T00:00:00Z", "count": 1},
        {"period_start": "2026-01-01T00:00:00Z", "count": 2},
        {"period_start": "2026-02-01T00:00:00Z", "count": 0},
    ]
    # A range starting mid-period counts only what is inside it.
    later = ok(
        script.get(
            "/analytics/jobs",
            customer_id=customer.id,
            interval="month",
            **{"from": "2026-01-01T00:00:01Z", "to": "2026-02-01T00:00:00Z"},
        )
    )
    assert later["by_period"] == [{"period_start": "2026-01-01T00:00:00Z", "count": 1}]


def test_a_naive_time_is_read_as_utc(db: Session, script: Script) -> None:
    configuration, customer = pipeline(db), create_customer(db)
    place(db, new_job(script, configuration, customer.id), datetime(2026, 1, 1, tzinfo=UTC))
    naive = {"from": "2026-01-01T00:00:00", "to": "2026-01-02T00:00:00"}
    aware = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}
    answers = [
        ok(script.get("/analytics/jobs", customer_id=customer.id, **params))
        for params in (naive, aware)
    ]
    assert answers[0] == answers[1]
    assert answers[0]["total"] == 1


# Steps ------------------------------------------------------------------------------------------


def test_the_steps_funnel_counts_reaches_completions_errors_and_times(
    db: Session, script: Script
) -> None:
    configuration, customer = pipeline(db), create_customer(db)
    jobs = [new_job(script, configuration, customer.id) for _ in range(5)]
    for job in jobs:
        place(db, job, T0)
    a, b, c, d, outside = jobs
    place(db, outside, T0 - timedelta(days=40))
    seconds = timedelta(seconds=1)
    # a: every step, in order.
    for tag, at in zip(["upload", "segment", "classify", "report"], [10, 30, 60, 100], strict=True):
        step(script, a, tag, T0 + at * seconds)
    # b: two errors at classify, then the retry succeeds.
    step(script, b, "upload", T0 + 20 * seconds)
    step(script, b, "segment", T0 + 60 * seconds)
    error(script, b, "classify", occurred_at=iso(T0 + 70 * seconds))
    error(script, b, "classify", occurred_at=iso(T0 + 80 * seconds))
    step(script, b, "classify", T0 + 120 * seconds)
    # c: fails at segment and never completes it; an error without a step counts nowhere.
    step(script, c, "upload", T0 + 30 * seconds)
    error(script, c, "segment", occurred_at=iso(T0 + 45 * seconds))
    error(script, c)
    # d: out of order: classify first (timed from creation), then upload (from classify).
    step(script, d, "classify", T0 + 50 * seconds)
    step(script, d, "upload", T0 + 80 * seconds)
    # Outside the range: counts nowhere.
    step(script, outside, "upload", T0 + 5 * seconds)
    error(script, outside, "report")

    body = ok(
        script.get(
            "/analytics/steps",
            tag=configuration.tag,
            customer_id=customer.id,
            **{"from": iso(T0 - timedelta(days=1)), "to": iso(T0 + timedelta(days=1))},
        )
    )
    assert (body["tag"], body["version"], body["configuration_id"], body["jobs"]) == (
        configuration.tag,
        1,
        configuration.id,
        4,
    )
    expected_times = {
        "upload": [10, 20, 30, 30],
        "segment": [20, 40],
        "classify": [30, 60, 50],
        "report": [40],
    }
    expected_counts = {  # (jobs_reached, completions, errors)
        "upload": (4, 4, 0),
        "segment": (3, 2, 1),
        "classify": (3, 3, 2),
        "report": (1, 1, 0),
    }
    assert [item["tag"] for item in body["steps"]] == [tag for tag, _, _ in PIPELINE]
    assert [item["position"] for item in body["steps"]] == [0, 1, 2, 3]
    for item in body["steps"]:
        reached, completions, errors = expected_counts[item["tag"]]
        assert (item["jobs_reached"], item["completions"], item["errors"]) == (
            reached,
            completions,
            errors,
        ), item
        assert item["error_rate"] == pytest.approx(errors / (completions + errors))
        times = expected_times[item["tag"]]
        assert item["median_seconds"] == estimated(percentile_cont(times, 0.5))
        assert item["p95_seconds"] == estimated(percentile_cont(times, 0.95))
    upload = body["steps"][0]
    assert (upload["median_seconds"], upload["p95_seconds"]) == (estimated(25), estimated(30))


def test_step_times_follow_late_and_earlier_completions(db: Session, script: Script) -> None:
    configuration, customer = pipeline(db), create_customer(db)
    job = new_job(script, configuration, customer.id)
    place(db, job, T0)
    minute = timedelta(minutes=1)

    def stored() -> dict[str, Any]:
        rows = db.execute(
            select(JobConfigurationStep.tag, JobStepCompletion.seconds_since_previous)
            .join(JobStepCompletion, JobStepCompletion.step_id == JobConfigurationStep.id)
            .where(JobStepCompletion.job_id == job["id"])
        )
        return dict(rows.all())

    step(script, job, "segment", T0 + 20 * minute)
    assert stored() == {"segment": 1200}
    step(script, job, "upload", T0 + 10 * minute)  # late: segment now follows upload
    step(script, job, "classify", T0 + 30 * minute)
    assert stored() == {"upload": 600, "segment": 600, "classify": 600}
    step(script, job, "segment", T0 + 5 * minute)  # reported again, earlier: that time counts
    assert stored() == {"segment": 300, "upload": 300, "classify": 1200}

    error(script, job, "report", occurred_at=iso(T0 + 31 * minute))
    error(script, job, "upload", occurred_at=iso(T0 + 32 * minute))  # a step already done
    facts = funnel_facts(db, [job["id"]])
    assert sorted(facts["errors"].values()) == [(T0, False), (T0, True)]
    # The retry succeeds, in a batch after a repeat of upload: the repeat changes no time.
    repeat, retry = (
        {"job_id": job["id"], "kind": "step", "name": name, "occurred_at": iso(at)}
        for name, at in [("upload", T0 + 35 * minute), ("report", T0 + 40 * minute)]
    )
    answer = script.post("/events/batch", {"events": [repeat, retry]})
    assert answer.status_code == 200, answer.text
    assert stored()["report"] == 600  # from classify, the latest completion
    facts = funnel_facts(db, [job["id"]])
    assert sorted(facts["errors"].values()) == [(T0, True), (T0, True)]
    assert facts == funnel_facts_worked_out(db, [job["id"]])


def test_a_step_nobody_reached_has_nulls(db: Session, script: Script) -> None:
    configuration, customer = pipeline(db), create_customer(db)
    new_job(script, configuration, customer.id)
    now = datetime.now(UTC)
    body = ok(
        script.get(
            "/analytics/steps",
            tag=configuration.tag,
            customer_id=customer.id,
            **{"from": iso(now - timedelta(days=1)), "to": iso(now + timedelta(days=1))},
        )
    )
    assert body["jobs"] == 1
    for item in body["steps"]:
        assert (item["jobs_reached"], item["completions"], item["errors"]) == (0, 0, 0)
        assert (item["error_rate"], item["median_seconds"], item["p95_seconds"]) == (
            None,
            None,
            None,
        )


def test_the_steps_funnel_is_of_one_version(db: Session, script: Script) -> None:
    tag = "versioned-funnel"
    customer = create_customer(db)
    first = create_configuration(db, tag=tag, steps=PIPELINE)
    job = new_job(script, first, customer.id, version=1)
    step(script, job, "upload")
    second = create_configuration(db, tag=tag, steps=PIPELINE[:2])
    now = datetime.now(UTC)
    params = {
        "tag": tag,
        "customer_id": customer.id,
        "from": iso(now - timedelta(hours=1)),
        "to": iso(now + timedelta(hours=1)),
    }
    latest = ok(script.get("/analytics/steps", **params))
    assert (latest["version"], latest["configuration_id"], latest["jobs"]) == (2, second.id, 0)
    assert len(latest["steps"]) == 2
    pinned = ok(script.get("/analytics/steps", version=1, **params))
    assert (pinned["version"], pinned["jobs"], pinned["steps"][0]["completions"]) == (1, 1, 1)


def test_unknown_tag_or_version_is_404(db: Session, script: Script) -> None:
    configuration = pipeline(db)
    window = {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}
    missing = script.get("/analytics/steps", tag="no-such-pipeline", **window)
    assert missing.status_code == 404
    assert missing.json()["detail"] == "Job configuration 'no-such-pipeline' not found"
    response = script.get("/analytics/steps", tag=configuration.tag, version=7, **window)
    assert response.status_code == 404
    assert response.json()["detail"] == f"Job configuration {configuration.tag!r} has no version 7"


def test_no_analytics_read_reads_the_events_table(db: Session, script: Script) -> None:
    configuration, customer = pipeline(db), create_customer(db)
    job = new_job(script, configuration, customer.id)
    step(script, job, "upload")
    error(script, job, "segment")
    window = {"from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z"}
    with captured_statements() as statements:
        ok(script.get("/analytics/jobs", interval="month", **window))
        ok(script.get("/analytics/steps", tag=configuration.tag, **window))
        ok(script.get("/analytics/customers", **window))
    assert statements
    assert not [sql for sql in statements if re.search(r"\bevents\b", sql)]


# Errors per step ---------------------------------------------------------------------------------


def test_errors_per_step_match_the_events_through_batches_and_replays(
    db: Session, script: Script
) -> None:
    configuration, customer = pipeline(db), create_customer(db)
    first, second = (new_job(script, configuration, customer.id) for _ in range(2))
    place(db, first, T0)
    place(db, second, T0)
    error(script, first, "segment", event_id="err-1", occurred_at=iso(T0))
    for _ in range(3):  # replays store nothing and count nothing
        assert error(script, first, "segment", event_id="err-1").status_code == 200
    batch = [
        {"job_id": first["id"], "kind": "error", "name": "segment", "event_id": "err-2",
         "occurred_at": iso(T0 + timedelta(minutes=5))},
        {"job_id": first["id"], "kind": "error", "name": "segment", "event_id": "err-1"},
        {"job_id": first["id"], "kind": "error", "name": "segment",
         "occurred_at": iso(T0 - timedelta(minutes=5))},
        {"job_id": second["id"], "kind": "error", "name": "report"},
        {"job_id": second["id"], "kind": "error", "name": "report", "event_id": "b"},
        {"job_id": second["id"], "kind": "error", "name": "report", "event_id": "b"},
        {"job_id": second["id"], "kind": "error", "name": "nope"},
        {"job_id": second["id"], "kind": "error"},
        {"job_id": second["id"], "kind": "step", "name": "report"},
    ]  # fmt: skip
    body = script.post("/events/batch", {"events": batch}).json()
    assert [item["result"] for item in body["results"]] == [
        "created", "duplicate", "created", "created", "created", "duplicate", "rejected",
        "created", "created",
    ]  # fmt: skip
    assert script.post("/events/batch", {"events": batch[:2]}).json()["duplicate"] == 2

    ids = [first["id"], second["id"]]
    table = step_errors_table(db, ids)
    assert table == step_errors_from_events(db, ids)
    step_ids = {
        step.tag: step.id
        for step in db.scalars(
            select(JobConfigurationStep).where(
                JobConfigurationStep.configuration_id == configuration.id
            )
        )
    }
    segment, report = step_ids["segment"], step_ids["report"]
    count, first_at, last_at = table[(first["id"], segment)]
    assert (count, first_at, last_at) == (3, T0 - timedelta(minutes=5), T0 + timedelta(minutes=5))
    assert table[(second["id"], report)][0] == 2
    assert set(table) == {(first["id"], segment), (second["id"], report)}

    window = {"from": iso(T0 - timedelta(days=365)), "to": iso(T0 + timedelta(days=365))}
    funnel = ok(
        script.get("/analytics/steps", tag=configuration.tag, customer_id=customer.id, **window)
    )
    errors = {item["tag"]: item["errors"] for item in funnel["steps"]}
    assert errors == {"upload": 0, "segment": 3, "classify": 0, "report": 2}


# Customers ---------------------------------------------------------------------------------------


def test_usage_per_customer(db: Session, script: Script) -> None:
    configuration = pipeline(db)
    busy, quiet, idle = create_customer(db), create_customer(db), create_customer(db)
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    done, failed, running = (new_job(script, configuration, busy.id) for _ in range(3))
    for tag, _, _ in PIPELINE:
        step(script, done, tag, start + timedelta(days=3))
    step(script, failed, "upload", start + timedelta(days=4))
    error(script, failed, "segment")
    step(script, running, "segment", end)  # completed after the range: not billed in it
    late = new_job(script, configuration, busy.id)  # created after the range: not counted
    step(script, late, "upload", end - timedelta(seconds=1))  # but its step cost is in range
    quiet_job = new_job(script, configuration, quiet.id)
    for job in (done, failed, running, quiet_job):
        place(db, job, start + timedelta(days=2))
    place(db, late, end)

    body = ok(script.get("/analytics/customers", **{"from": iso(start), "to": iso(end)}))
    by_id = {item["customer_id"]: item for item in body["customers"]}
    last_events = [script.get(f"/jobs/{job['id']}").json()["last_event_at"] for job in (done,
                   failed, running)]  # fmt: skip
    assert by_id[busy.id] == {
        "customer_id": busy.id,
        "name": busy.name,
        "jobs": 3,
        "completed": 1,
        "failed": 1,
        "error_rate": pytest.approx(1 / 3),
        "cost": str(sum(cost for _, _, cost in PIPELINE) + Decimal("0.1000") * 2),
        "last_activity": max(last_events),
    }
    assert by_id[quiet.id] == {
        "customer_id": quiet.id,
        "name": quiet.name,
        "jobs": 1,
        "completed": 0,
        "failed": 0,
        "error_rate": 0.0,
        "cost": "0.0000",
        "last_activity": None,  # created, never heard from
    }
    assert by_id[idle.id] == {
        "customer_id": idle.id,
        "name": idle.name,
        "jobs": 0,
        "completed": 0,
        "failed": 0,
        "error_rate": None,
        "cost": "0.0000",
        "last_activity": None,
    }
    names = [item["name"] for item in body["customers"]]
    assert names == sorted(names)


# Access ------------------------------------------------------------------------------------------


def test_a_client_sees_its_own_customer_only(db: Session, client: TestClient) -> None:
    configuration, own, other = pipeline(db), create_customer(db), create_customer(db)
    admin = admin_script(db, client)
    mine = client_script(db, client, own)
    for customer in (own, own, other):
        job = new_job(admin, configuration, customer.id)
        error(admin, job, "upload")
    now = datetime.now(UTC)
    window = {"from": iso(now - timedelta(hours=1)), "to": iso(now + timedelta(hours=1))}

    body = ok(mine.get("/analytics/jobs", **window))
    assert body["total"] == 2
    assert body == ok(mine.get("/analytics/jobs", customer_id=own.id, **window))
    funnel = ok(mine.get("/analytics/steps", tag=configuration.tag, **window))
    assert (funnel["jobs"], funnel["steps"][0]["errors"]) == (2, 2)
    everyone = ok(admin.get("/analytics/steps", tag=configuration.tag, **window))
    assert everyone["jobs"] >= 3

    for path, extra in [("/analytics/jobs", {}), ("/analytics/steps", {"tag": configuration.tag})]:
        for customer_id in (other.id, 999_999):
            response = mine.get(path, customer_id=customer_id, **extra, **window)
            assert response.status_code == 404
            assert response.json() == {"detail": f"Customer {customer_id} not found"}
    response = admin.get("/analytics/jobs", customer_id=999_999, **window)
    assert response.json() == {"detail": "Customer 999999 not found"}

    refused = mine.get("/analytics/customers", **window)
    assert refused.status_code == 403
    assert refused.json() == {"detail": "Only admins may do this"}


def test_an_ingest_only_key_cannot_read_analytics(db: Session, client: TestClient) -> None:
    writer = admin_script(db, client, scopes=(Scope.INGEST,))
    window = {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}
    for path, extra in [
        ("/analytics/jobs", {}),
        ("/analytics/steps", {"tag": pipeline(db).tag}),
        ("/analytics/customers", {}),
    ]:
        response = writer.get(path, **extra, **window)
        assert response.status_code == 403
        assert "read" in response.json()["detail"]


def test_analytics_need_authentication(client: TestClient) -> None:
    window = {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}
    assert client.get("/analytics/jobs", params=window).status_code == 401


# Validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/analytics/jobs", "/analytics/steps", "/analytics/customers"])
@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-02-01T00:00:00Z", "2026-01-01T00:00:00Z", "'from' must be before 'to'"),
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "'from' must be before 'to'"),
        ("2020-01-01T00:00:00Z", "2025-01-03T00:00:00Z", "at most 5 years (1827 days)"),
    ],
)
def test_a_bad_range_is_422_saying_why(
    db: Session, script: Script, path: str, start: str, end: str, message: str
) -> None:
    extra = {"tag": pipeline(db).tag} if path == "/analytics/steps" else {}
    response = script.get(path, **extra, **{"from": start, "to": end, "interval": "month"})
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_five_years_is_allowed(script: Script) -> None:
    window = {"from": "2020-01-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"}
    assert len(ok(script.get("/analytics/jobs", interval="month", **window))["by_period"]) == 60


def test_more_than_400_periods_is_422(script: Script) -> None:
    allowed = {"from": "2025-01-01T00:00:00Z", "to": "2026-02-05T00:00:00Z"}  # 400 days
    assert len(ok(script.get("/analytics/jobs", interval="day", **allowed))["by_period"]) == 400
    response = script.get(
        "/analytics/jobs", interval="day", **{"from": allowed["from"], "to": "2026-02-05T00:00:01Z"}
    )
    assert response.status_code == 422
    assert "at most 400 periods" in response.json()["detail"]


@pytest.mark.parametrize(
    "params",
    [
        {"to": "2026-01-01T00:00:00Z"},
        {"from": "yesterday", "to": "2026-01-01T00:00:00Z"},
        {"from": "2025-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z", "interval": "year"},
    ],
)
def test_missing_or_malformed_parameters_are_422(script: Script, params: dict[str, str]) -> None:
    assert script.get("/analytics/jobs", **params).status_code == 422
