"""The retention policy seen through the API: pruning raw events changes no job, no bill and no
analytics answer, and a job's event list says what was pruned."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import JobConfiguration
from app.services import retention
from tests.helpers.factories import create_customer
from tests.helpers.scripts import Script, admin_script, client_script, new_job, pipeline

MARCH = "2026-03-{day:02d}T10:00:00Z"


@pytest.fixture
def admin(db: Session, client: TestClient) -> Script:
    return admin_script(db, client)


@pytest.fixture
def configuration(db: Session) -> JobConfiguration:
    return pipeline(db)


def ok(response: Any) -> Any:
    assert response.status_code in (200, 201), response.text
    return response.json()


def prune_everything(db: Session, *, limit: int = 3) -> int:
    """Prune every event received so far (the test's events all carry the transaction's time),
    in batches of `limit`, as a run of the task would."""
    pruning = retention.start_pruning(db, cutoff=datetime.now(UTC) + timedelta(minutes=1))
    total = 0
    while (done := retention.prune_batch(db, pruning=pruning, limit=limit)) == limit:
        total += done
    return total + done


def history(db: Session, admin: Script, configuration: JobConfiguration) -> list[dict[str, Any]]:
    """Two customers' jobs in every state the events make: completed (once with a step sent
    twice, once after a resolved error), failed at a step, failed with no step, running."""
    customers = [create_customer(db).id for _ in range(2)]
    jobs = [new_job(admin, configuration, customers[n % 2]) for n in range(5)]
    tags = ["upload", "segment", "classify", "report"]

    def send(job: dict[str, Any], kind: str, name: str | None, day: int, **extra: Any) -> None:
        body = {"kind": kind, "name": name, "occurred_at": MARCH.format(day=day), **extra}
        ok(admin.event(job["id"], **{key: value for key, value in body.items() if value}))

    completed, retried, failed_at_step, failed, running = jobs
    for day, tag in enumerate(tags, start=1):
        send(completed, "step", tag, day, event_id=f"c-{tag}")
    send(completed, "step", "segment", 9, event_id="c-segment-again")
    send(retried, "step", "upload", 3)
    send(retried, "error", "segment", 4, message="out of memory")
    for day, tag in enumerate(tags[1:], start=5):
        send(retried, "step", tag, day)
    send(failed_at_step, "step", "upload", 10)
    send(failed_at_step, "error", "segment", 11, message="scanner offline")
    send(failed, "info", None, 12, message="starting")
    send(failed, "error", None, 13, message="lost the input")
    send(running, "step", "upload", 14)
    send(running, "info", None, 15, metadata={"progress": "half"})
    return jobs


def reads(admin: Script, configuration: JobConfiguration, jobs: list[dict[str, Any]]) -> Any:
    """Every answer that billing, analytics and the jobs routes give about this history."""
    customer_id = jobs[0]["customer_id"]
    year = {"from": "2026-01-01", "to": "2027-01-01"}
    return {
        "usage by day": ok(admin.get("/billing/usage", interval="day", **year)),
        "usage by month": ok(
            admin.get("/billing/usage", interval="month", customer_id=customer_id, **year)
        ),
        "invoice": ok(admin.get("/billing/invoice", customer_id=customer_id, period="2026-03")),
        "invoice csv": admin.get(
            "/billing/invoice", customer_id=customer_id, period="2026-03", format="csv"
        ).text,
        "steps": ok(admin.get("/analytics/steps", tag=configuration.tag, **year)),
        "analytics jobs": ok(admin.get("/analytics/jobs", interval="month", **year)),
        "customers": ok(admin.get("/analytics/customers", **year)),
        "list by update": ok(admin.get("/jobs", sort="updated_at", limit=200)),
        "jobs": [ok(admin.get(f"/jobs/{job['id']}")) for job in jobs],
    }


def test_pruning_changes_no_job_no_bill_and_no_analytics_answer(
    db: Session, admin: Script, configuration: JobConfiguration
) -> None:
    jobs = history(db, admin, configuration)
    before = reads(admin, configuration, jobs)
    assert [job["status"] for job in before["jobs"]] == [
        "completed", "completed", "failed", "failed", "running",
    ]  # fmt: skip

    # 16 events, of which the two unresolved errors stay.
    assert prune_everything(db) == 14

    assert reads(admin, configuration, jobs) == before


def test_the_event_list_says_what_was_pruned_and_keeps_unresolved_errors(
    db: Session, admin: Script, configuration: JobConfiguration
) -> None:
    jobs = history(db, admin, configuration)
    completed, _, failed_at_step, failed, _ = jobs
    untouched = new_job(admin, configuration, completed["customer_id"])
    assert ok(admin.get(f"/jobs/{completed['id']}/events"))["pruned"] is None

    prune_everything(db)
    now = datetime.now(UTC)

    listed = ok(admin.get(f"/jobs/{completed['id']}/events"))
    assert listed["items"] == []
    assert listed["pruned"]["count"] == 5
    assert now < datetime.fromisoformat(listed["pruned"]["before"]) <= now + timedelta(minutes=1)
    for job, message in ((failed_at_step, "scanner offline"), (failed, "lost the input")):
        listed = ok(admin.get(f"/jobs/{job['id']}/events"))
        assert [(event["kind"], event["message"]) for event in listed["items"]] == [
            ("error", message)
        ]
        assert listed["pruned"]["count"] == 1
        detail = ok(admin.get(f"/jobs/{job['id']}"))
        assert detail["event_count"] == 2  # still counts the pruned one
    assert ok(admin.get(f"/jobs/{untouched['id']}/events"))["pruned"] is None


def test_a_client_sees_what_was_pruned_of_its_own_jobs_only(
    db: Session, client: TestClient, admin: Script, configuration: JobConfiguration
) -> None:
    customer = create_customer(db)
    own = client_script(db, client, customer)
    job = new_job(admin, configuration, customer.id)
    ok(own.event(job["id"], kind="step", name="upload"))
    prune_everything(db)
    assert ok(own.get(f"/jobs/{job['id']}/events"))["pruned"]["count"] == 1
    other = client_script(db, client)
    assert other.get(f"/jobs/{job['id']}/events").status_code == 404


def test_the_openapi_document_describes_the_pruned_field(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    answer = document["paths"]["/jobs/{job_id}/events"]["get"]["responses"]["200"]
    reference = answer["content"]["application/json"]["schema"]["$ref"]
    page = document["components"]["schemas"][reference.rsplit("/", 1)[1]]
    assert {"items", "next_cursor", "pruned"} <= set(page["properties"])
    pruned = document["components"]["schemas"]["EventsPruned"]
    assert set(pruned["required"]) == {"count", "before"}
