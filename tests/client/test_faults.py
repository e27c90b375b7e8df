"""Answers that say nothing about what was sent (a crashed Lambda's 500, a revoked key's 401)
keep the spool's entries for later; only a refusal of the content itself drops an entry."""

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import update

from app.internal import api_key_format
from app.models import ApiKey
from config import config
from tests.client.support import PIPELINE_STEPS, Account, ApiServer, FaultProxy, server_events
from tests.helpers.capture import captured_records
from trackerapi import ApiError, Rejection, RetryPolicy, Tracker, TrackerUnavailable

TAGS = [tag for tag, _, _ in PIPELINE_STEPS]
ONE_TRY = RetryPolicy(attempts=1)


@pytest.fixture
def proxy(api_server: ApiServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(api_server.port)
    yield proxy
    proxy.close()


def revoke(api_key: str) -> None:
    with config.database.SessionLocal() as session:
        digest = api_key_format.digest(api_key)
        session.execute(
            update(ApiKey).where(ApiKey.digest == digest).values(revoked_at=datetime.now(UTC))
        )
        session.commit()


def test_events_met_by_a_500_stay_spooled_and_are_delivered_once_the_api_answers(
    api_server: ApiServer, account: Account, spool_file: Path, proxy: FaultProxy
) -> None:
    rejections: list[Rejection] = []
    tracker = Tracker(
        account.api_key, proxy.base_url, spool=spool_file, retry=ONE_TRY,
        on_error=rejections.append,
    )  # fmt: skip
    job = tracker.job(f"crash-{uuid.uuid4().hex[:8]}", tag=account.tag)
    assert job.id is not None

    proxy.fail_with(500)
    sent = [job.step(tag) for tag in TAGS[:5]]
    with captured_records("trackerapi") as records:
        assert not tracker.flush()
    assert any("the API failed" in record.getMessage() for record in records)
    assert proxy.requests  # the 500 was answered, not a connection error
    assert tracker.spool is not None
    assert tracker.spool.count(proxy.base_url) == 5
    assert rejections == []

    proxy.fail_with(None)
    assert tracker.flush()
    assert tracker.spool.count(proxy.base_url) == 0
    stored = server_events(account, api_server, job.id)
    assert [event["event_id"] for event in stored] == [event.event_id for event in sent]
    assert rejections == []
    tracker.close()


def test_a_batch_answered_404_by_something_that_is_not_the_api_stays_spooled(
    api_server: ApiServer, account: Account, spool_file: Path, proxy: FaultProxy
) -> None:
    tracker = Tracker(account.api_key, proxy.base_url, spool=spool_file, retry=ONE_TRY)
    job = tracker.job(f"lost-{uuid.uuid4().hex[:8]}", tag=account.tag)
    assert job.id is not None

    proxy.fail_with(404)  # a gateway in front of nothing, or a wrong base path
    sent = [job.step(tag) for tag in TAGS[:3]]
    with captured_records("trackerapi") as records:
        assert not tracker.flush()
    assert any("check the base URL" in record.getMessage() for record in records)
    assert tracker.spool is not None
    assert tracker.spool.count(proxy.base_url) == 3

    proxy.fail_with(None)
    assert tracker.flush()
    stored = server_events(account, api_server, job.id)
    assert [event["event_id"] for event in stored] == [event.event_id for event in sent]
    tracker.close()


def test_a_background_job_created_during_a_500_is_spooled_a_sync_one_raises(
    api_server: ApiServer, account: Account, spool_file: Path, proxy: FaultProxy
) -> None:
    tracker = Tracker(account.api_key, proxy.base_url, spool=spool_file, retry=ONE_TRY)
    proxy.fail_with(500)
    with pytest.raises(ApiError) as caught:
        tracker.job(f"sync-{uuid.uuid4().hex[:8]}", tag=account.tag, mode="sync")
    assert caught.value.status_code == 500

    provider_id = f"later-{uuid.uuid4().hex[:8]}"
    job = tracker.job(provider_id, tag=account.tag)
    assert job.state is None
    job.step(TAGS[0])
    assert not tracker.flush()
    assert tracker.spool is not None
    assert tracker.spool.count(proxy.base_url) == 2

    proxy.fail_with(None)
    assert tracker.flush()
    with account.reader(api_server.base_url) as reader:
        stored = reader.get(f"/jobs/by-provider-id/{provider_id}").json()
    assert stored["steps_completed"] == 1
    tracker.close()


def test_a_revoked_key_keeps_the_spooled_events_and_the_log_says_the_key_was_refused(
    api_server: ApiServer, account: Account, spool_file: Path
) -> None:
    rejections: list[Rejection] = []
    tracker = Tracker(
        account.api_key, api_server.base_url, spool=spool_file, retry=ONE_TRY,
        on_error=rejections.append,
    )  # fmt: skip
    job = tracker.job(f"revoked-{uuid.uuid4().hex[:8]}", tag=account.tag)
    revoke(account.api_key)
    for tag in TAGS[:3]:
        job.step(tag)
    with captured_records("trackerapi") as records:
        assert not tracker.flush()
    assert any("refused the key" in record.getMessage() for record in records)
    assert tracker.spool is not None
    assert tracker.spool.count(api_server.base_url) == 3
    assert rejections == []
    tracker.close()


def test_a_refusal_of_the_content_is_reported_and_dropped(
    api_server: ApiServer, account: Account, spool_file: Path
) -> None:
    rejections: list[Rejection] = []
    tracker = Tracker(
        account.api_key, api_server.base_url, spool=spool_file, on_error=rejections.append
    )
    job = tracker.job_handle(f"none-such-{uuid.uuid4().hex[:8]}")
    job.step(TAGS[0])
    assert tracker.flush()
    assert tracker.spool is not None
    assert tracker.spool.count(api_server.base_url) == 0
    assert len(rejections) == 1
    tracker.close()


def test_a_job_created_once_the_spool_is_delivered_has_its_state_and_raises_nothing(
    api_server: ApiServer, account: Account, spool_file: Path, proxy: FaultProxy
) -> None:
    tracker = Tracker(account.api_key, proxy.base_url, spool=spool_file, retry=ONE_TRY, strict=True)
    first = tracker.job(f"first-{uuid.uuid4().hex[:8]}", tag=account.tag)
    proxy.fail_with(500)
    first.step(TAGS[0])
    with pytest.raises(TrackerUnavailable):
        tracker.flush()

    proxy.fail_with(None)
    second = tracker.job(f"second-{uuid.uuid4().hex[:8]}", tag=account.tag)
    assert second.id is not None
    assert second.status == "pending"
    assert tracker.spool is not None
    assert tracker.spool.count(proxy.base_url) == 0
    assert server_events(account, api_server, first.id)[0]["name"] == TAGS[0]
    tracker.close()


def test_leaving_a_block_during_an_outage_does_not_re_read_the_job(
    api_server: ApiServer, account: Account, spool_file: Path, proxy: FaultProxy
) -> None:
    tracker = Tracker(account.api_key, proxy.base_url, spool=spool_file, retry=ONE_TRY)
    job = tracker.job(f"block-{uuid.uuid4().hex[:8]}", tag=account.tag)
    proxy.fail_with(500)
    with job:
        job.step(TAGS[0])
    assert proxy.requests == ["POST /events/batch HTTP/1.1"]
    tracker.close(timeout=0)
