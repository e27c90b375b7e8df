"""The job block against the real API: lifecycle, exceptions, rejections and lost answers."""

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from tests.client.support import (
    PIPELINE_STEPS,
    Account,
    ApiServer,
    LostAnswerProxy,
    server_events,
    server_job,
)
from trackerapi import AsyncTracker, EventRejected, Rejection, Tracker, TrackerError

TAGS = [tag for tag, _, _ in PIPELINE_STEPS]


def job_id() -> str:
    return f"scan-{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize("mode", ["background", "sync"])
def test_a_job_block_reports_its_steps_and_follows_the_servers_state(
    api_server: ApiServer, account: Account, spool_file: Path, mode: str
) -> None:
    tracker = Tracker(account.api_key, api_server.base_url, mode=mode, spool=spool_file)  # type: ignore[arg-type]
    provider_id = job_id()
    with tracker.job(provider_id, tag=account.tag, metadata={"scan": 1}) as job:
        assert job.status == "pending"
        for tag in TAGS[:10]:
            job.step(tag)
        job.info("halfway")
    halfway = server_job(account, api_server, job.id)
    assert (job.status, job.progress, job.cost) == (
        "running",
        halfway["progress"],
        Decimal(halfway["cost"]),
    )
    assert halfway["steps_completed"] == 10
    assert halfway["event_count"] == 11

    # The same id again finds the same job (the create is idempotent).
    with tracker.job(provider_id, tag=account.tag) as again:
        assert again.id == job.id
        for tag in TAGS[10:]:
            again.step(tag)
    done = server_job(account, api_server, job.id)
    assert (again.status, again.progress, again.cost) == ("completed", 1.0, Decimal(done["cost"]))
    assert Decimal(done["cost"]) == sum(cost for _, _, cost in PIPELINE_STEPS)
    assert done["status"] == "completed"
    assert tracker.close()


def test_an_exception_in_the_block_is_reported_fails_the_job_and_is_raised_again(
    api_server: ApiServer, account: Account, spool_file: Path
) -> None:
    tracker = Tracker(account.api_key, api_server.base_url, spool=spool_file)
    job = tracker.job(job_id(), tag=account.tag)

    def pipeline() -> None:
        with job:
            job.step(TAGS[0])
            1 / 0  # noqa: B018

    with pytest.raises(ZeroDivisionError):
        pipeline()
    server = server_job(account, api_server, job.id)
    assert server["status"] == "failed"
    assert job.status == "failed"
    error = server_events(account, api_server, job.id)[-1]
    assert error["kind"] == "error"
    assert error["message"] == "ZeroDivisionError: division by zero"
    assert error["metadata"]["exception"] == "builtins.ZeroDivisionError"
    assert "1 / 0" in error["metadata"]["traceback"]
    tracker.close()


def test_sync_mode_raises_the_servers_refusal_and_stores_nothing(
    api_server: ApiServer, account: Account, spool_file: Path
) -> None:
    tracker = Tracker(account.api_key, api_server.base_url, mode="sync", spool=spool_file)
    job = tracker.job(job_id(), tag=account.tag)
    with pytest.raises(EventRejected) as refused:
        job.step("no-such-step")
    assert refused.value.status_code == 422
    assert "Unknown step 'no-such-step'" in refused.value.detail
    assert server_job(account, api_server, job.id)["event_count"] == 0
    tracker.close()


def test_background_rejections_go_to_on_error_item_by_item(
    api_server: ApiServer, account: Account, spool_file: Path
) -> None:
    rejections: list[Rejection] = []
    tracker = Tracker(
        account.api_key, api_server.base_url, spool=spool_file, on_error=rejections.append
    )
    with tracker.job(job_id(), tag=account.tag) as job:
        job.step(TAGS[0])
        bad = job.step("no-such-step")
        job.step(TAGS[1])
        worse = job.info("x" * 5000)
    assert [rejection.body["event_id"] for rejection in rejections] == [
        bad.event_id,
        worse.event_id,
    ]
    assert "Unknown step 'no-such-step'" in rejections[0].reason
    assert "message" in rejections[1].reason
    assert server_job(account, api_server, job.id)["steps_completed"] == 2
    assert tracker.spool is not None
    assert tracker.spool.count() == 0
    tracker.close()


@pytest.mark.parametrize("mode", ["background", "sync"])
def test_a_lost_answer_is_retried_with_the_same_ids_and_stored_once(
    api_server: ApiServer, account: Account, spool_file: Path, mode: str
) -> None:
    proxy = LostAnswerProxy(api_server.port)
    try:
        tracker = Tracker(account.api_key, proxy.base_url, mode=mode, spool=spool_file)  # type: ignore[arg-type]
        proxy.drop_answers = 1  # the job's creation
        job = tracker.job(job_id(), tag=account.tag)
        for tag in TAGS[:3]:
            proxy.drop_answers = 1  # each event (or the batch) once
            job.step(tag)
            assert tracker.flush()
        assert proxy.dropped == 4
        events = server_events(account, api_server, job.id)
        assert len(events) == 3
        assert [event["name"] for event in events] == TAGS[:3]
        server = server_job(account, api_server, job.id)
        assert (server["event_count"], server["steps_completed"]) == (3, 3)
        tracker.close()
    finally:
        proxy.close()


def test_a_naive_occurred_at_is_refused_in_the_caller_and_nothing_is_queued(
    spool_file: Path,
) -> None:
    naive = datetime(2026, 12, 7, 9, 30)
    tracker = Tracker("key", "http://127.0.0.1:1", spool=spool_file, linger=600)
    job = tracker.job_handle(job_id())
    with pytest.raises(ValueError, match="occurred_at must be timezone-aware"):
        job.step(TAGS[0], occurred_at=naive)
    aware = job.step(TAGS[0], occurred_at=naive.replace(tzinfo=timezone(timedelta(hours=2))))
    assert aware.content.count("+02:00") == 1
    assert tracker._worker is not None
    assert list(tracker._worker.batches.items) == [aware]
    tracker.close(timeout=0)

    async def reported() -> None:
        async_tracker = AsyncTracker("key", "http://127.0.0.1:1", spool=spool_file, linger=600)
        with pytest.raises(ValueError, match="occurred_at must be timezone-aware"):
            await async_tracker.job_handle(job_id()).error("failed", occurred_at=naive)
        assert not async_tracker._batches.items
        await async_tracker.aclose(timeout=0)

    asyncio.run(reported())


@pytest.mark.parametrize("mode", ["background", "sync"])
def test_a_closed_tracker_says_so_rather_than_lose_an_event(spool_file: Path, mode: str) -> None:
    tracker = Tracker("key", "http://127.0.0.1:1", mode=mode, spool=spool_file)  # type: ignore[arg-type]
    job = tracker.job_handle(job_id())
    tracker.close(timeout=0)
    with pytest.raises(TrackerError, match="closed"):
        job.step(TAGS[0])
    with pytest.raises(TrackerError, match="closed"):
        tracker.flush()
    with pytest.raises(TrackerError, match="closed"):
        tracker.job(job_id(), tag=TAGS[0])
    with pytest.raises(TrackerError, match="closed"):
        tracker.get_job(job.provider_job_id)
    with pytest.raises(TrackerError, match="closed"):
        tracker.request("GET", "/health")

    async def reported() -> None:
        async_tracker = AsyncTracker("key", "http://127.0.0.1:1", mode=mode, spool=spool_file)  # type: ignore[arg-type]
        async_job = async_tracker.job_handle(job_id())
        await async_tracker.aclose(timeout=0)
        with pytest.raises(TrackerError, match="closed"):
            await async_job.info("late")
        with pytest.raises(TrackerError, match="closed"):
            await async_tracker.job(job_id(), tag=TAGS[0])
        with pytest.raises(TrackerError, match="closed"):
            await async_tracker.get_job(async_job.provider_job_id)
        with pytest.raises(TrackerError, match="closed"):
            await async_tracker.request("GET", "/health")

    asyncio.run(reported())
