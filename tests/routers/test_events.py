"""Events and the job semantics they drive: progress, cost, status, idempotency."""

import itertools
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Event, Scope
from tests.helpers.factories import create_customer
from tests.helpers.scripts import PIPELINE, Script, admin_script, client_script, new_job, pipeline


@pytest.fixture
def script(db: Session, client: TestClient) -> Script:
    return admin_script(db, client)


@pytest.fixture
def job(db: Session, script: Script) -> dict[str, Any]:
    job: dict[str, Any] = new_job(script, pipeline(db), create_customer(db).id)
    return job


def step(script: Script, job: dict[str, Any], name: str, **extra: Any) -> Any:
    response = script.event(job["id"], kind="step", name=name, **extra)
    assert response.status_code in (200, 201), response.text
    return response.json()["job"]


def count_events(db: Session, job_id: int) -> int:
    return db.scalar(select(func.count()).select_from(Event).where(Event.job_id == job_id)) or 0


def test_a_new_job_is_pending_with_nothing_done(job: dict[str, Any]) -> None:
    assert job["status"] == "pending"
    assert (job["progress"], job["completed_points"], job["total_points"]) == (0.0, 0, 10)
    assert job["cost"] == "0.0000"
    assert (job["steps_completed"], job["step_count"], job["event_count"]) == (0, 4, 0)


def test_progress_is_weighted_by_points_and_cost_is_exact(
    script: Script, job: dict[str, Any]
) -> None:
    state = step(script, job, "classify")  # 3 of 10 points
    assert (state["completed_points"], state["progress"]) == (3, 0.3)
    assert state["cost"] == "2.2500"
    assert state["status"] == "running"
    state = step(script, job, "upload")
    assert (state["completed_points"], state["cost"]) == (4, "2.3500")


def test_completing_a_step_twice_counts_once(script: Script, job: dict[str, Any]) -> None:
    step(script, job, "segment")
    state = step(script, job, "segment")
    assert (state["completed_points"], state["steps_completed"], state["cost"]) == (
        2,
        1,
        "1.5000",
    )
    assert state["event_count"] == 2  # both events are kept


@pytest.mark.parametrize(
    "order", list(itertools.permutations([tag for tag, _, _ in PIPELINE]))[::5]
)
def test_order_does_not_matter(db: Session, script: Script, order: tuple[str, ...]) -> None:
    job = new_job(script, pipeline(db), create_customer(db).id)
    for name in order:
        state = step(script, job, name)
    assert state["status"] == "completed"
    assert (state["progress"], state["completed_points"]) == (1.0, 10)
    assert Decimal(state["cost"]) == sum(cost for _, _, cost in PIPELINE)
    assert state["completed_at"] is not None


def test_an_error_fails_the_job_until_its_step_succeeds(
    script: Script, job: dict[str, Any]
) -> None:
    failed = script.event(job["id"], kind="error", name="segment", message="GPU out of memory")
    assert failed.status_code == 201
    assert failed.json()["job"]["status"] == "failed"
    assert failed.json()["job"]["unresolved_error_count"] == 1

    retried = step(script, job, "segment")
    assert retried["status"] == "running"
    assert (retried["error_count"], retried["unresolved_error_count"]) == (1, 0)


def test_a_step_event_for_another_step_does_not_resolve_an_error(
    script: Script, job: dict[str, Any]
) -> None:
    script.event(job["id"], kind="error", name="segment")
    assert step(script, job, "upload")["status"] == "failed"


def test_an_error_without_a_step_lasts_until_every_step_is_complete(
    script: Script, job: dict[str, Any]
) -> None:
    script.event(job["id"], kind="error", message="disk full")
    for name in ("upload", "segment", "classify"):
        assert step(script, job, name)["status"] == "failed"
    final = step(script, job, "report")
    assert final["status"] == "completed"
    assert final["unresolved_error_count"] == 0


def test_all_steps_done_with_an_open_step_error_is_failed(
    script: Script, job: dict[str, Any]
) -> None:
    for name in ("upload", "segment", "classify", "report"):
        step(script, job, name)
    errored = script.event(job["id"], kind="error", name="report").json()["job"]
    assert errored["status"] == "failed"
    assert step(script, job, "report")["status"] == "completed"


def test_info_events_change_nothing_but_the_counters(script: Script, job: dict[str, Any]) -> None:
    response = script.event(job["id"], kind="info", message="starting", metadata={"host": "gpu-3"})
    assert response.status_code == 201
    body = response.json()
    assert body["event"]["metadata"] == {"host": "gpu-3"}
    state = body["job"]
    assert (state["status"], state["completed_points"], state["cost"]) == ("running", 0, "0.0000")
    assert state["event_count"] == 1


def test_a_replayed_event_id_is_stored_once_and_changes_nothing(
    db: Session, script: Script, job: dict[str, Any]
) -> None:
    first = script.event(job["id"], kind="step", name="classify", event_id="evt-1")
    assert first.status_code == 201
    for _ in range(5):
        again = script.event(job["id"], kind="step", name="classify", event_id="evt-1")
        assert again.status_code == 200
        assert again.json()["event"] == first.json()["event"]
        assert again.json()["job"]["event_count"] == 1
        assert again.json()["job"]["cost"] == "2.2500"
    error_replays = [
        script.event(job["id"], kind="error", event_id="evt-err").status_code for _ in range(3)
    ]
    assert error_replays == [201, 200, 200]
    assert count_events(db, job["id"]) == 2
    state = script.get(f"/jobs/{job['id']}").json()
    assert (state["error_count"], state["unresolved_error_count"], state["event_count"]) == (
        1,
        1,
        2,
    )


def test_the_same_event_id_on_another_job_is_another_event(db: Session, script: Script) -> None:
    configuration, customer = pipeline(db), create_customer(db)
    first, second = (
        new_job(script, configuration, customer.id),
        new_job(script, configuration, customer.id),
    )
    assert script.event(first["id"], kind="info", event_id="shared").status_code == 201
    assert script.event(second["id"], kind="info", event_id="shared").status_code == 201


def test_occurred_at_is_kept_in_utc_and_received_at_is_recorded(
    script: Script, job: dict[str, Any]
) -> None:
    body = script.event(
        job["id"], kind="step", name="upload", occurred_at="2026-03-01T10:00:00+02:00"
    ).json()
    assert body["event"]["occurred_at"] == "2026-03-01T08:00:00Z"
    assert body["event"]["received_at"] is not None
    detail = script.get(f"/jobs/{job['id']}").json()
    [upload] = [item for item in detail["steps"] if item["tag"] == "upload"]
    assert upload["completed_at"] == "2026-03-01T08:00:00Z"


# Bad input ----------------------------------------------------------------------------------


def test_an_unknown_step_is_refused_listing_the_valid_ones_and_nothing_is_stored(
    db: Session, script: Script, job: dict[str, Any]
) -> None:
    response = script.event(job["id"], kind="step", name="uplaod")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "'uplaod'" in detail
    for tag, _, _ in PIPELINE:
        assert tag in detail
    assert count_events(db, job["id"]) == 0
    assert script.get(f"/jobs/{job['id']}").json()["event_count"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "step"}, "name is required"),
        ({"kind": "finished", "name": "upload"}, "kind"),
        ({"kind": "info", "occurred_at": "2026-03-01T10:00:00"}, "occurred_at"),
        ({"kind": "info", "metadata": {"blob": "x" * 17_000}}, "metadata"),
        ({"kind": "info", "metadata": [1, 2]}, "metadata"),
        ({"kind": "info", "surprise": 1}, "surprise"),
        ({"kind": "info", "event_id": ""}, "event_id"),
    ],
)
def test_invalid_events_are_422_with_an_actionable_message(
    db: Session, script: Script, job: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    response = script.event(job["id"], **body)
    assert response.status_code == 422
    assert field in str(response.json()["detail"])
    assert count_events(db, job["id"]) == 0


def test_deeply_nested_metadata_is_refused(script: Script, job: dict[str, Any]) -> None:
    nested: dict[str, Any] = {}
    for _ in range(20):
        nested = {"x": nested}
    response = script.event(job["id"], kind="info", metadata=nested)
    assert response.status_code == 422
    assert "nested deeper" in str(response.json()["detail"])


def post_raw(script: Script, path: str, text: str) -> Any:
    return script.client.post(
        path, content=text.encode(), headers={**script.headers, "Content-Type": "application/json"}
    )


def test_metadata_thousands_of_levels_deep_is_refused(
    db: Session, script: Script, job: dict[str, Any]
) -> None:
    deep = '{"x":' * 900 + "{}" + "}" * 900
    response = post_raw(script, f"/jobs/{job['id']}/events", f'{{"kind":"info","metadata":{deep}}}')
    assert response.status_code == 422, response.text
    assert "nested deeper" in str(response.json()["detail"])
    assert count_events(db, job["id"]) == 0


def test_nan_in_metadata_is_refused_alone_in_a_batch(
    db: Session, script: Script, job: dict[str, Any]
) -> None:
    single = post_raw(script, f"/jobs/{job['id']}/events", '{"kind":"info","metadata":{"x":NaN}}')
    assert single.status_code == 422
    assert "NaN or Infinity" in str(single.json()["detail"])
    batch = post_raw(
        script,
        "/events/batch",
        f'{{"events":[{{"job_id":{job["id"]},"kind":"info","metadata":{{"x":Infinity}}}},'
        f'{{"job_id":{job["id"]},"kind":"info"}}]}}',
    )
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert [result["result"] for result in results] == ["rejected", "created"]
    assert "NaN or Infinity" in results[0]["reason"]
    assert count_events(db, job["id"]) == 1


def test_a_non_json_body_is_422(script: Script, job: dict[str, Any]) -> None:
    response = script.client.post(
        f"/jobs/{job['id']}/events",
        content=b"kind=step",
        headers={**script.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422


def test_events_for_a_missing_job_are_404(script: Script) -> None:
    response = script.event(999_999, kind="info")
    assert response.status_code == 404
    assert response.json() == {"detail": "Job 999999 not found"}


def test_events_for_another_customers_job_are_404_like_a_missing_one(
    db: Session, client: TestClient, script: Script, job: dict[str, Any]
) -> None:
    outsider = client_script(db, client)
    response = outsider.event(job["id"], kind="info")
    assert response.status_code == 404
    assert response.json() == {"detail": f"Job {job['id']} not found"}
    assert outsider.get(f"/jobs/{job['id']}/events").status_code == 404


def test_events_for_a_cancelled_job_are_409_and_not_stored(
    db: Session, script: Script, job: dict[str, Any]
) -> None:
    assert script.post(f"/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    response = script.event(job["id"], kind="step", name="upload")
    assert response.status_code == 409
    assert "cancelled" in response.json()["detail"]
    assert count_events(db, job["id"]) == 0


def test_a_read_only_key_cannot_post_events(
    db: Session, client: TestClient, job: dict[str, Any]
) -> None:
    reader = admin_script(db, client, scopes=(Scope.READ,))
    response = reader.event(job["id"], kind="info")
    assert response.status_code == 403
    assert "ingest" in response.json()["detail"]
    assert reader.get(f"/jobs/{job['id']}/events").status_code == 200


def test_an_ingest_only_key_cannot_read(
    db: Session, client: TestClient, job: dict[str, Any]
) -> None:
    writer = admin_script(db, client, scopes=(Scope.INGEST,))
    assert writer.event(job["id"], kind="info").status_code == 201
    assert writer.get(f"/jobs/{job['id']}").status_code == 403


# Listing --------------------------------------------------------------------------------------


def test_events_are_listed_in_arrival_order_with_a_cursor(
    script: Script, job: dict[str, Any]
) -> None:
    sent = [
        script.event(job["id"], kind="info", message=f"m{i}").json()["event"]["id"]
        for i in range(5)
    ]
    seen: list[int] = []
    cursor = None
    while True:
        page = script.get(
            f"/jobs/{job['id']}/events", limit=2, **({"cursor": cursor} if cursor else {})
        ).json()
        seen += [event["id"] for event in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sent


# Batches --------------------------------------------------------------------------------------


def test_a_batch_answers_one_result_per_item_in_order(
    db: Session, script: Script, job: dict[str, Any]
) -> None:
    items = [
        {"job_id": job["id"], "kind": "step", "name": "upload", "event_id": "b-1"},
        {"provider_job_id": job["provider_job_id"], "kind": "step", "name": "segment"},
        {"job_id": job["id"], "kind": "step", "name": "nope"},
        {"job_id": job["id"], "kind": "step", "name": "upload", "event_id": "b-1"},
        {"job_id": 999_999, "kind": "info"},
        {"kind": "info"},
        {"job_id": job["id"], "kind": "step"},
    ]
    response = script.post("/events/batch", {"events": items})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [result["result"] for result in body["results"]] == [
        "created",
        "created",
        "rejected",
        "duplicate",
        "rejected",
        "rejected",
        "rejected",
    ]
    assert [result["index"] for result in body["results"]] == list(range(len(items)))
    assert (body["created"], body["duplicate"], body["rejected"]) == (2, 1, 4)
    assert "valid steps" in body["results"][2]["reason"]
    assert "not found" in body["results"][4]["reason"]
    assert "job_id" in body["results"][5]["reason"]
    assert "name is required" in body["results"][6]["reason"]
    state = script.get(f"/jobs/{job['id']}").json()
    assert (state["event_count"], state["completed_points"], state["cost"]) == (2, 3, "1.6000")
    assert count_events(db, job["id"]) == 2


def test_a_batch_cannot_touch_another_customers_job(
    db: Session, client: TestClient, job: dict[str, Any]
) -> None:
    outsider = client_script(db, client)
    body = outsider.post(
        "/events/batch", {"events": [{"job_id": job["id"], "kind": "info"}]}
    ).json()
    assert body["results"][0]["result"] == "rejected"
    assert body["results"][0]["reason"] == f"Job {job['id']!r} not found"


def test_a_batch_over_1000_items_is_refused(script: Script, job: dict[str, Any]) -> None:
    items = [{"job_id": job["id"], "kind": "info"}] * 1001
    response = script.post("/events/batch", {"events": items})
    assert response.status_code == 422
    assert "1000" in str(response.json()["detail"])


def test_a_batch_of_1000_is_accepted(db: Session, script: Script, job: dict[str, Any]) -> None:
    items = [
        {"job_id": job["id"], "kind": "step", "name": PIPELINE[i % 4][0], "event_id": f"e{i}"}
        for i in range(1000)
    ]
    body = script.post("/events/batch", {"events": items}).json()
    assert body["created"] == 1000
    state = script.get(f"/jobs/{job['id']}").json()
    assert (state["status"], state["event_count"], state["steps_completed"]) == (
        "completed",
        1000,
        4,
    )
    replay = script.post("/events/batch", {"events": items}).json()
    assert replay["duplicate"] == 1000
    assert script.get(f"/jobs/{job['id']}").json()["event_count"] == 1000


def test_a_batch_applies_the_rules_in_arrival_order(script: Script, job: dict[str, Any]) -> None:
    items = [
        {"job_id": job["id"], "kind": "error", "name": "segment", "event_id": "a"},
        {"job_id": job["id"], "kind": "step", "name": "segment", "event_id": "b"},  # resolves a
        {"job_id": job["id"], "kind": "step", "name": "upload", "event_id": "c"},
        {"job_id": job["id"], "kind": "error", "name": "upload", "event_id": "d"},  # stays open
        {"job_id": job["id"], "kind": "error", "event_id": "e"},  # no step: open until all done
        {"job_id": job["id"], "kind": "step", "name": "classify", "event_id": "f"},
    ]
    body = script.post("/events/batch", {"events": items}).json()
    assert body["created"] == 6
    state = script.get(f"/jobs/{job['id']}").json()
    assert (state["status"], state["error_count"], state["unresolved_error_count"]) == (
        "failed",
        3,
        2,
    )
    assert (state["completed_points"], state["steps_completed"]) == (6, 3)
    events = {
        event["event_id"]: event
        for event in script.get(f"/jobs/{job['id']}/events").json()["items"]
    }
    assert events["a"]["resolved_at"] is not None
    assert events["d"]["resolved_at"] is None
    assert events["e"]["resolved_at"] is None
    assert events["b"]["resolved_at"] is None

    finish = [
        {"job_id": job["id"], "kind": "step", "name": "report", "event_id": "g"},  # all done: e
        {"job_id": job["id"], "kind": "step", "name": "upload", "event_id": "h"},  # retry: d
    ]
    assert script.post("/events/batch", {"events": finish}).json()["created"] == 2
    state = script.get(f"/jobs/{job['id']}").json()
    assert (state["status"], state["unresolved_error_count"], state["cost"]) == (
        "completed",
        0,
        "6.1001",
    )


def test_a_batch_answers_repeats_of_an_event_id_as_duplicates(
    script: Script, job: dict[str, Any]
) -> None:
    items = [
        {"job_id": job["id"], "kind": "step", "name": "upload", "event_id": "same"},
        {"job_id": job["id"], "kind": "step", "name": "upload", "event_id": "same"},
        {"job_id": job["id"], "kind": "step", "name": "nope", "event_id": "bad"},
        {"job_id": job["id"], "kind": "step", "name": "nope", "event_id": "bad"},
    ]
    results = script.post("/events/batch", {"events": items}).json()["results"]
    assert [result["result"] for result in results] == [
        "created",
        "duplicate",
        "rejected",
        "rejected",
    ]
    assert results[1]["event_id"] == results[0]["event_id"]
    assert script.get(f"/jobs/{job['id']}").json()["event_count"] == 1


def test_a_replay_for_a_job_cancelled_since_answers_the_stored_event(
    script: Script, job: dict[str, Any]
) -> None:
    first = script.event(job["id"], kind="step", name="upload", event_id="before-cancel")
    script.post(f"/jobs/{job['id']}/cancel")
    replay = script.event(job["id"], kind="step", name="upload", event_id="before-cancel")
    assert replay.status_code == 200
    assert replay.json()["event"]["id"] == first.json()["event"]["id"]
    assert script.event(job["id"], kind="step", name="upload", event_id="new").status_code == 409


def test_an_earlier_completion_time_moves_the_jobs_completion(
    script: Script, job: dict[str, Any]
) -> None:
    for name in ("upload", "segment", "classify"):
        step(script, job, name, occurred_at="2026-05-01T10:00:00Z")
    step(script, job, "report", occurred_at="2026-05-03T10:00:00Z")
    late = script.get(f"/jobs/{job['id']}").json()
    assert late["completed_at"] == "2026-05-03T10:00:00Z"
    state = step(script, job, "report", occurred_at="2026-05-02T10:00:00Z")
    assert state["completed_at"] == "2026-05-02T10:00:00Z"
    assert (state["completed_points"], state["cost"]) == (10, "6.1001")
