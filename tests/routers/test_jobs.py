"""Jobs: idempotent creation, visibility, lists with filters and cursors, detail, cancel."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.models import Job
from tests.helpers.capture import captured_statements
from tests.helpers.factories import create_configuration, create_customer, create_user
from tests.helpers.scripts import PIPELINE, Script, admin_script, client_script, new_job, pipeline


@pytest.fixture
def script(db: Session, client: TestClient) -> Script:
    return admin_script(db, client)


def test_create_then_repeat_answers_the_same_job(db: Session, script: Script) -> None:
    configuration, customer = pipeline(db), create_customer(db)
    body = {
        "provider_job_id": "scan-0001",
        "tag": configuration.tag,
        "customer_id": customer.id,
        "metadata": {"patient": "anon-17"},
    }
    first = script.create_job(**body)
    assert first.status_code == 201
    job = first.json()
    assert (job["tag"], job["version"], job["customer_id"]) == (configuration.tag, 1, customer.id)
    assert job["metadata"] == {"patient": "anon-17"}
    again = script.create_job(**body)
    assert again.status_code == 200
    assert again.json()["id"] == job["id"]
    assert script.create_job(**{**body, "version": 1}).status_code == 200


def test_the_same_provider_job_id_elsewhere_is_409(db: Session, script: Script) -> None:
    configuration, other_configuration = pipeline(db), pipeline(db)
    customer, other_customer = create_customer(db), create_customer(db)
    new_job(script, configuration, customer.id, provider_job_id="dup-1")
    for tag, customer_id in [
        (configuration.tag, other_customer.id),
        (other_configuration.tag, customer.id),
    ]:
        response = script.create_job(provider_job_id="dup-1", tag=tag, customer_id=customer_id)
        assert response.status_code == 409
        assert "dup-1" in response.json()["detail"]


def test_a_job_pins_the_version_it_was_created_with(db: Session, script: Script) -> None:
    tag = "pinned-pipeline"
    create_configuration(db, tag=tag, steps=PIPELINE)
    customer = create_customer(db)
    job = new_job(script, pipeline_of(db, tag), customer.id)
    create_configuration(db, tag=tag, steps=PIPELINE[:2])  # version 2, cheaper and shorter
    assert new_job(script, pipeline_of(db, tag), customer.id)["version"] == 2
    state = script.event(job["id"], kind="step", name="report").json()["job"]
    assert (state["version"], state["total_points"], state["cost"]) == (1, 10, "2.2501")
    old = script.create_job(
        provider_job_id="old-version", tag=tag, version=1, customer_id=customer.id
    )
    assert old.json()["version"] == 1


def pipeline_of(db: Session, tag: str) -> Any:
    from app.services.jobs import resolve_configuration

    return resolve_configuration(db, tag=tag, version=None)


@pytest.mark.parametrize(
    ("changes", "status", "message"),
    [
        ({"tag": "no-such-pipeline"}, 422, "Unknown job configuration tag 'no-such-pipeline'"),
        ({"version": 7}, 422, "has no version 7 (latest: 1)"),
        ({"customer_id": None}, 422, "customer_id is required"),
        ({"customer_id": 999_999}, 404, "Customer 999999 not found"),
        ({"provider_job_id": "has space"}, 422, "provider_job_id"),
        ({"provider_job_id": ""}, 422, "provider_job_id"),
        ({"metadata": {"x": "y" * 20_000}}, 422, "metadata"),
        ({"colour": "red"}, 422, "colour"),
    ],
)
def test_invalid_job_creation(
    db: Session, script: Script, changes: dict[str, Any], status: int, message: str
) -> None:
    configuration, customer = pipeline(db), create_customer(db)
    body = {"provider_job_id": "bad-1", "tag": configuration.tag, "customer_id": customer.id}
    response = script.create_job(**{**body, **changes})
    assert response.status_code == status
    assert message in str(response.json()["detail"])


def test_a_clients_job_is_for_its_own_customer(db: Session, client: TestClient) -> None:
    configuration, customer = pipeline(db), create_customer(db)
    mine = client_script(db, client, customer)
    job = mine.create_job(provider_job_id="c-1", tag=configuration.tag)
    assert job.status_code == 201
    assert job.json()["customer_id"] == customer.id
    other = create_customer(db)
    refused = mine.create_job(provider_job_id="c-2", tag=configuration.tag, customer_id=other.id)
    assert refused.status_code == 404


def test_clients_see_only_their_customers_jobs(
    db: Session, client: TestClient, script: Script
) -> None:
    configuration = pipeline(db)
    customer, other = create_customer(db), create_customer(db)
    mine = new_job(script, configuration, customer.id)
    theirs = new_job(script, configuration, other.id)
    reader = client_script(db, client, customer)
    listed = [job["id"] for job in reader.get("/jobs").json()["items"]]
    assert listed == [mine["id"]]
    assert reader.get(f"/jobs/{theirs['id']}").status_code == 404
    assert reader.get(f"/jobs/by-provider-id/{theirs['provider_job_id']}").status_code == 404
    assert reader.get("/jobs", customer_id=other.id).json()["items"] == []
    assert len(script.get("/jobs", customer_id=other.id).json()["items"]) == 1


def test_job_detail_shows_every_step_with_completion_errors_and_cost(
    db: Session, script: Script
) -> None:
    job = new_job(script, pipeline(db), create_customer(db).id, provider_job_id="run/2026/07")
    script.event(job["id"], kind="step", name="upload")
    script.event(job["id"], kind="error", name="classify", message="first")
    script.event(job["id"], kind="error", name="classify", message="second")
    script.event(job["id"], kind="error", message="no step")
    for detail in (
        script.get(f"/jobs/{job['id']}").json(),
        script.get("/jobs/by-provider-id/run/2026/07").json(),
    ):
        assert [step["tag"] for step in detail["steps"]] == [tag for tag, _, _ in PIPELINE]
        upload, segment, classify, _ = detail["steps"]
        assert upload["completed_at"] is not None
        assert upload["cost"] == "0.1000"
        assert segment["completed_at"] is None
        assert classify["latest_unresolved_error"]["message"] == "second"
        assert detail["latest_unresolved_job_error"]["message"] == "no step"
        assert (detail["status"], detail["unresolved_error_count"]) == ("failed", 3)


def test_unknown_job_ids_are_404(script: Script) -> None:
    assert script.get("/jobs/424242").status_code == 404
    assert script.get("/jobs/by-provider-id/nope").status_code == 404
    assert script.get("/jobs/not-a-number").status_code == 422


# Lists -------------------------------------------------------------------------------------------


def make_jobs(db: Session, script: Script, count: int) -> tuple[list[dict[str, Any]], int]:
    configuration, customer = pipeline(db), create_customer(db)
    jobs = [new_job(script, configuration, customer.id) for _ in range(count)]
    return jobs, customer.id


def walk(script: Script, cursor: str | None = None, **params: Any) -> list[int]:
    ids: list[int] = []
    while True:
        page = script.get("/jobs", **params, **({"cursor": cursor} if cursor else {})).json()
        ids += [job["id"] for job in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


def test_filters(db: Session, script: Script) -> None:
    jobs, customer_id = make_jobs(db, script, 4)
    done, failed, running, pending = jobs
    for tag, _, _ in PIPELINE:
        script.event(done["id"], kind="step", name=tag)
    script.event(failed["id"], kind="error")
    script.event(running["id"], kind="step", name="upload")

    def ids(**params: Any) -> set[int]:
        return {
            job["id"]
            for job in script.get("/jobs", customer_id=customer_id, **params).json()["items"]
        }

    assert ids(status="completed") == {done["id"]}
    assert ids(status=["failed", "pending"]) == {failed["id"], pending["id"]}
    assert ids(has_errors=True) == {failed["id"]}
    assert ids(has_errors=False) == {done["id"], running["id"], pending["id"]}
    assert ids(tag=done["tag"]) == {job["id"] for job in jobs}
    assert ids(tag="other-tag") == set()
    assert ids(q=done["provider_job_id"]) == {done["id"]}
    assert ids(q=done["provider_job_id"][:4]) == {job["id"] for job in jobs}
    assert ids(q="%") == set()
    assert script.get("/jobs", status="exploded").status_code == 422


def test_created_range_filters(db: Session, script: Script) -> None:
    jobs, customer_id = make_jobs(db, script, 3)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for offset, job in enumerate(jobs):
        db.execute(
            update(Job).where(Job.id == job["id"]).values(created_at=base + timedelta(days=offset))
        )
    db.flush()
    listed = script.get(
        "/jobs",
        customer_id=customer_id,
        created_after="2026-01-02T00:00:00Z",
        created_before="2026-01-03T00:00:00Z",
    ).json()["items"]
    assert [job["id"] for job in listed] == [jobs[1]["id"]]


@pytest.mark.parametrize("sort", ["created_at", "updated_at", "progress"])
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_every_sort_walks_every_job_once_in_order(
    db: Session, script: Script, sort: str, order: str
) -> None:
    jobs, customer_id = make_jobs(db, script, 7)
    for index, job in enumerate(jobs):
        for tag, _, _ in PIPELINE[: index % 5]:
            script.event(job["id"], kind="step", name=tag)
    ids = walk(script, customer_id=customer_id, sort=sort, order=order, limit=2)
    assert sorted(ids) == sorted(job["id"] for job in jobs)
    listed = {
        job["id"]: job
        for job in script.get("/jobs", customer_id=customer_id, limit=200).json()["items"]
    }
    keys = [(listed[i][sort], i) for i in ids]
    assert keys == sorted(keys, reverse=order == "desc")


def test_pagination_is_stable_while_new_jobs_arrive(db: Session, script: Script) -> None:
    jobs, customer_id = make_jobs(db, script, 5)
    first = script.get("/jobs", customer_id=customer_id, limit=2).json()
    configuration_tag = jobs[0]["tag"]
    for _ in range(3):
        script.create_job(
            provider_job_id=f"late-{_}-{customer_id}",
            tag=configuration_tag,
            customer_id=customer_id,
        )
    rest = walk(script, customer_id=customer_id, limit=2, cursor=first["next_cursor"])
    seen = [job["id"] for job in first["items"]] + rest
    assert seen == sorted((job["id"] for job in jobs), reverse=True)


def test_a_bad_cursor_or_limit_is_422(script: Script) -> None:
    assert script.get("/jobs", cursor="garbage!").status_code == 422
    assert script.get("/jobs", limit=201).status_code == 422
    assert script.get("/jobs", limit=0).status_code == 422
    created_cursor = script.get("/jobs", limit=1).json()["next_cursor"]
    if created_cursor:
        assert script.get("/jobs", sort="progress", cursor=created_cursor).status_code == 422


def test_a_list_issues_the_same_number_of_queries_for_1_and_200_jobs(
    db: Session, script: Script
) -> None:
    jobs, customer_id = make_jobs(db, script, 30)
    with captured_statements() as small:
        assert len(script.get("/jobs", customer_id=customer_id, limit=1).json()["items"]) == 1
    with captured_statements() as large:
        assert len(script.get("/jobs", customer_id=customer_id, limit=200).json()["items"]) == 30
    assert len(small) == len(large)
    with captured_statements() as detail:
        script.get(f"/jobs/{jobs[0]['id']}")
    assert len(detail) <= len(small) + 3


# Cancel ------------------------------------------------------------------------------------------


def test_cancel_by_admin_and_by_the_jobs_customer(
    db: Session, client: TestClient, script: Script
) -> None:
    configuration, customer = pipeline(db), create_customer(db)
    first, second = (
        new_job(script, configuration, customer.id),
        new_job(script, configuration, customer.id),
    )
    cancelled = script.post(f"/jobs/{first['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancelled_at"] is not None
    assert script.post(f"/jobs/{first['id']}/cancel").status_code == 200  # idempotent

    owner = client_script(db, client, customer)
    assert owner.post(f"/jobs/{second['id']}/cancel").json()["status"] == "cancelled"
    outsider = client_script(db, client)
    third = new_job(script, configuration, customer.id)
    assert outsider.post(f"/jobs/{third['id']}/cancel").status_code == 404


def test_a_completed_job_cannot_be_cancelled(db: Session, script: Script) -> None:
    job = new_job(script, pipeline(db), create_customer(db).id)
    for tag, _, _ in PIPELINE:
        script.event(job["id"], kind="step", name=tag)
    response = script.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 409


def test_browser_users_read_jobs_with_their_session(
    db: Session, client: TestClient, script: Script
) -> None:
    from tests.helpers.factories import log_in

    customer = create_customer(db)
    job = new_job(script, pipeline(db), customer.id)
    user = create_user(db, customer=customer)
    browser = TestClient(client.app, base_url="https://testserver")
    login = log_in(browser, user)
    assert browser.get(f"/jobs/{job['id']}").status_code == 200
    assert browser.post(f"/jobs/{job['id']}/cancel").status_code == 403  # no CSRF token
    assert browser.post(f"/jobs/{job['id']}/cancel", headers=login.headers).status_code == 200
