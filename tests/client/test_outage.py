"""Outages for real: the API stopped and started again, a database it cannot reach (its own
503 with Retry-After), and its login throttle (429 with Retry-After)."""

import logging
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.client.support import (
    PIPELINE_STEPS,
    Account,
    ApiServer,
    run_cli,
    server_events,
    server_job,
    serving,
)
from tests.helpers.capture import captured_records
from tests.helpers.factories import PASSWORD
from trackerapi import ApiError, RetryPolicy, Tracker, TrackerUnavailable
from trackerapi.courier import OUTAGE_SECONDS, Rules

TAGS = [tag for tag, _, _ in PIPELINE_STEPS]


def test_events_spooled_while_the_api_is_down_are_stored_once_in_order_by_trackerapi_flush(
    account: Account, spool_file: Path
) -> None:
    with serving() as server:
        tracker = Tracker(account.api_key, server.base_url, spool=spool_file)
        before = tracker.job(f"up-{uuid.uuid4().hex[:8]}", tag=account.tag)
        before.step(TAGS[0])
        assert tracker.flush()
        server.stop()

        sent = [before.step(tag) for tag in TAGS[1:8]]
        created_while_down = tracker.job(f"down-{uuid.uuid4().hex[:8]}", tag=account.tag)
        assert created_while_down.state is None
        sent_later = [created_while_down.step(tag) for tag in TAGS[:5]]
        sent += [before.error("disk full", step=TAGS[8]), before.info("noted")]
        assert not tracker.flush()  # no raise: a tracker outage must not stop the script
        assert tracker.spool is not None
        # Every event, and the creation of the job made while the API was down.
        assert tracker.spool.count(server.base_url) == len(sent) + len(sent_later) + 1
        tracker.close()

        server.start()
        env = {"TRACKER_URL": server.base_url, "TRACKER_API_KEY": account.api_key}
        flushed = run_cli("--spool", str(spool_file), "flush", env=env)
        assert flushed.returncode == 0, flushed.stderr
        assert flushed.stdout.strip() == "spool empty"

        stored = server_events(account, server, before.id)
        assert [event["event_id"] for event in stored[1:]] == [event.event_id for event in sent]
        assert [e["occurred_at"][:19] for e in stored[1:]] == [
            e.occurred_at.isoformat()[:19] for e in sent
        ]
        with account.reader(server.base_url) as reader:
            later = reader.get(f"/jobs/by-provider-id/{created_while_down.provider_job_id}").json()
        assert [e["event_id"] for e in server_events(account, server, later["id"])] == [
            event.event_id for event in sent_later
        ]
        assert later["steps_completed"] == 5
        job = server_job(account, server, before.id)
        assert (job["event_count"], job["steps_completed"], job["status"]) == (10, 8, "failed")

        # Flushing again sends nothing twice.
        assert run_cli("--spool", str(spool_file), "flush", env=env).returncode == 0
        assert server_job(account, server, before.id)["event_count"] == 10


def retry_delays(records: list[logging.LogRecord]) -> list[float]:
    return [
        record.__dict__["trackerapi_delay"]
        for record in records
        if "trackerapi_delay" in record.__dict__
    ]


def test_the_apis_503_retry_after_is_waited_for_then_the_job_is_spooled(
    account: Account, spool_file: Path
) -> None:
    # The app without a database: every request answers 503 with Retry-After: 1.
    with serving("postgresql+psycopg2://postgres@127.0.0.1:1/nowhere") as server:
        assert httpx.get(f"{server.base_url}/health", timeout=30).status_code == 503
        tracker = Tracker(
            account.api_key,
            server.base_url,
            spool=spool_file,
            # Backoff alone would wait milliseconds: only Retry-After explains a wait of 1 s.
            retry=RetryPolicy(attempts=3, backoff=0.001, max_backoff=0.001, deadline=60),
        )
        with captured_records("trackerapi") as records:
            job = tracker.job("retry-after-503", tag=account.tag)
        assert job.state is None
        assert retry_delays(records) == [1.0, 1.0]
        assert tracker.spool is not None
        assert tracker.spool.count(server.base_url) == 1
        with pytest.raises(TrackerUnavailable, match="503"):
            Tracker(
                account.api_key,
                server.base_url,
                spool=False,
                strict=True,
                retry=RetryPolicy(attempts=2, backoff=0.001),
            ).job("x", tag=account.tag)
        tracker.close(timeout=0)


def test_the_apis_429_retry_after_is_honoured_never_cut_short(
    api_server: ApiServer, account: Account, spool_file: Path
) -> None:
    with httpx.Client(base_url=api_server.base_url, timeout=30) as plain:
        for _ in range(5):
            answer = plain.post(
                "/auth/token", data={"username": account.admin_email, "password": "wrong-one"}
            )
            assert answer.status_code == 401
    tracker = Tracker(
        account.api_key,
        api_server.base_url,
        spool=spool_file,
        retry=RetryPolicy(attempts=5, backoff=0.001, deadline=30),
    )
    # The throttle asks for minutes: the client gives up at once rather than retry sooner.
    with captured_records("trackerapi") as records, pytest.raises(TrackerUnavailable) as caught:
        tracker.request(
            "POST", "/auth/token", data={"username": account.admin_email, "password": PASSWORD}
        )
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 30
    assert "429" in str(caught.value)
    assert retry_delays(records) == []
    with pytest.raises(ApiError):  # a plain refusal is not retried either
        tracker.request("GET", "/jobs/by-provider-id/none-such")
    tracker.close()


def test_an_outage_lasts_as_long_as_the_apis_retry_after_asked() -> None:
    rules = Rules(None, base_url="http://127.0.0.1:1", on_error=None, max_batch=1,
                  max_batch_bytes=1, key="k")  # fmt: skip
    rules.mark_down(TrackerUnavailable("429 Too Many Requests", retry_after=600))
    assert rules._down_until - time.monotonic() > OUTAGE_SECONDS
    rules.mark_down(TrackerUnavailable("connection refused"))
    assert rules.in_outage
