"""AsyncTracker against the real API, with the faults the thread-based client is tested with:
lost answers, a server stopped and started, the API's own 503 and 429 with Retry-After,
rejections, volume from many tasks, and a program that ends with events still queued."""

import asyncio
import random
import subprocess
import sys
import textwrap
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from root import ROOT_DIR
from tests.client.support import (
    PIPELINE_STEPS,
    Account,
    ApiServer,
    LostAnswerProxy,
    server_events,
    server_job,
    serving,
)
from tests.client.test_background import COMPARED, plan
from tests.client.test_outage import retry_delays
from tests.helpers.capture import captured_records
from trackerapi import (
    ApiError,
    AsyncJob,
    AsyncTracker,
    EventRejected,
    JobConfig,
    Rejection,
    RetryPolicy,
    StepConfig,
    TrackerUnavailable,
)
from trackerapi.core import Mode
from trackerapi.spool import Spool

TAGS = [tag for tag, _, _ in PIPELINE_STEPS]


def job_id() -> str:
    return f"aio-{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize("mode", ["background", "sync"])
def test_an_async_job_block_reports_its_steps_and_follows_the_servers_state(
    api_server: ApiServer, account: Account, spool_file: Path, mode: Mode
) -> None:
    async def pipeline() -> Any:
        async with AsyncTracker(
            account.api_key, api_server.base_url, mode=mode, spool=spool_file
        ) as tracker:
            async with tracker.job(job_id(), tag=account.tag) as job:
                assert job.status == "pending"
                for tag in TAGS:
                    await job.step(tag)
            return job

    job = asyncio.run(pipeline())
    done = server_job(account, api_server, job.id)
    assert (job.status, job.progress, job.cost) == ("completed", 1.0, Decimal(done["cost"]))
    assert [event["name"] for event in server_events(account, api_server, job.id)] == TAGS


def test_a_lost_answer_is_retried_with_the_same_ids_and_stored_once(
    api_server: ApiServer, account: Account, spool_file: Path
) -> None:
    proxy = LostAnswerProxy(api_server.port)

    async def pipeline() -> int | None:
        async with AsyncTracker(account.api_key, proxy.base_url, spool=spool_file) as tracker:
            proxy.drop_answers = 1  # the job's creation
            job = await tracker.job(job_id(), tag=account.tag)
            for tag in TAGS[:3]:
                proxy.drop_answers = 1  # each batch once
                await job.step(tag)
                assert await tracker.flush()
            return job.id

    try:
        job = asyncio.run(pipeline())
        assert proxy.dropped == 4
    finally:
        proxy.close()
    assert [event["name"] for event in server_events(account, api_server, job)] == TAGS[:3]
    server = server_job(account, api_server, job)
    assert (server["event_count"], server["steps_completed"]) == (3, 3)


def test_events_queued_while_the_api_is_down_are_spooled_then_delivered_once_in_order(
    account: Account, spool_file: Path
) -> None:
    with serving() as server:

        async def pipeline() -> tuple[int | None, list[str], str]:
            tracker = AsyncTracker(
                account.api_key, server.base_url, spool=spool_file, retry=RetryPolicy(attempts=2)
            )
            job = await tracker.job(job_id(), tag=account.tag)
            await job.step(TAGS[0])
            assert await tracker.flush()
            server.stop()
            sent = [await job.step(tag) for tag in TAGS[1:8]]
            later = await tracker.job(job_id(), tag=account.tag)
            assert later.state is None  # spooled
            sent_later = [await later.step(tag) for tag in TAGS[:4]]
            assert not await tracker.flush()  # no raise: an outage must not stop the program
            assert tracker.spool is not None
            waiting = await asyncio.to_thread(tracker.spool.count, server.base_url)
            assert waiting == len(sent) + len(sent_later) + 1

            server.start()
            assert await tracker.flush()
            assert await tracker.aclose()
            ids = [event.event_id for event in sent]
            return job.id, ids, later.provider_job_id

        job, sent, later_id = asyncio.run(pipeline())
        stored = server_events(account, server, job)
        assert [event["event_id"] for event in stored[1:]] == sent
        with account.reader(server.base_url) as reader:
            later = reader.get(f"/jobs/by-provider-id/{later_id}").json()
        assert later["steps_completed"] == 4
        assert server_job(account, server, job)["event_count"] == 8


def test_the_apis_503_retry_after_is_waited_for_then_the_job_is_spooled(
    account: Account, spool_file: Path
) -> None:
    with serving("postgresql+psycopg2://postgres@127.0.0.1:1/nowhere") as server:
        assert httpx.get(f"{server.base_url}/health", timeout=30).status_code == 503

        async def pipeline() -> None:
            tracker = AsyncTracker(
                account.api_key,
                server.base_url,
                spool=spool_file,
                retry=RetryPolicy(attempts=3, backoff=0.001, max_backoff=0.001, deadline=60),
            )
            with captured_records("trackerapi") as records:
                job = await tracker.job("retry-after-503", tag=account.tag)
            assert job.state is None
            assert retry_delays(records) == [1.0, 1.0]
            assert tracker.spool is not None
            assert tracker.spool.count(server.base_url) == 1
            strict = AsyncTracker(
                account.api_key,
                server.base_url,
                spool=False,
                strict=True,
                retry=RetryPolicy(attempts=2, backoff=0.001),
            )
            with pytest.raises(TrackerUnavailable, match="503"):
                await strict.job("x", tag=account.tag)
            await strict.aclose(timeout=0)
            await tracker.aclose(timeout=0)

        asyncio.run(pipeline())


def test_the_apis_429_retry_after_is_honoured_never_cut_short(
    api_server: ApiServer, account: Account
) -> None:
    with httpx.Client(base_url=api_server.base_url, timeout=30) as plain:
        for _ in range(5):
            answer = plain.post(
                "/auth/token", data={"username": account.admin_email, "password": "wrong-one"}
            )
            assert answer.status_code == 401

    async def pipeline() -> None:
        tracker = AsyncTracker(
            account.api_key,
            api_server.base_url,
            spool=False,
            retry=RetryPolicy(attempts=5, backoff=0.001, deadline=30),
        )
        with captured_records("trackerapi") as records, pytest.raises(TrackerUnavailable) as caught:
            await tracker.request(
                "POST", "/auth/token", data={"username": account.admin_email, "password": "x"}
            )
        assert caught.value.retry_after is not None
        assert caught.value.retry_after > 30
        assert retry_delays(records) == []
        await tracker.aclose()

    asyncio.run(pipeline())


def test_rejections_go_to_on_error_item_by_item_and_sync_mode_raises_them(
    api_server: ApiServer, account: Account, spool_file: Path
) -> None:
    rejections: list[Rejection] = []

    async def pipeline() -> tuple[int | None, list[str]]:
        tracker = AsyncTracker(
            account.api_key, api_server.base_url, spool=spool_file, on_error=rejections.append
        )
        async with tracker.job(job_id(), tag=account.tag) as job:
            await job.step(TAGS[0])
            bad = await job.step("no-such-step")
            await job.step(TAGS[1])
            worse = await job.info("x" * 5000)
        sync_job = await tracker.job(job_id(), tag=account.tag, mode="sync")
        with pytest.raises(EventRejected) as refused:
            await sync_job.step("no-such-step")
        assert refused.value.status_code == 422
        await tracker.aclose()
        return job.id, [bad.event_id, worse.event_id]

    job, rejected = asyncio.run(pipeline())
    assert [rejection.body["event_id"] for rejection in rejections] == rejected
    assert "Unknown step 'no-such-step'" in rejections[0].reason
    assert server_job(account, api_server, job)["steps_completed"] == 2


def test_five_thousand_events_from_fifty_tasks_end_as_if_sent_one_by_one(
    api_server: ApiServer, account: Account, spool_file: Path
) -> None:
    rng = random.Random(23)
    plans = [plan(rng, 100) for _ in range(50)]
    rejections: list[Rejection] = []
    run = uuid.uuid4().hex[:8]

    async def one_job(job: AsyncJob, n: int) -> None:
        for kind, step, message in plans[n]:
            if kind == "step":
                assert step is not None
                await job.step(step)
            elif kind == "error":
                await job.error(message or "", step=step)
            else:
                await job.info(message or "")
            await asyncio.sleep(0)  # the tasks interleave

    async def pipeline() -> list[int | None]:
        tracker = AsyncTracker(
            account.api_key, api_server.base_url, spool=spool_file, on_error=rejections.append
        )
        jobs = [await tracker.job(f"aio-bg-{run}-{n}", tag=account.tag) for n in range(50)]
        await asyncio.gather(*(one_job(job, n) for n, job in enumerate(jobs)))
        assert await tracker.flush(timeout=300)
        await tracker.aclose()
        return [job.id for job in jobs]

    ids = asyncio.run(pipeline())
    assert rejections == []
    with account.reader(api_server.base_url) as reader:
        for n, events in enumerate(plans):
            one_by_one = reader.post(
                "/jobs", json={"provider_job_id": f"aio-seq-{run}-{n}", "tag": account.tag}
            ).json()
            for kind, step, message in events:
                body: dict[str, Any] = {"kind": kind, "name": step, "message": message}
                answer = reader.post(f"/jobs/{one_by_one['id']}/events", json=body)
                assert answer.status_code == 201, answer.text
            expected = reader.get(f"/jobs/{one_by_one['id']}").json()
            batched = reader.get(f"/jobs/{ids[n]}").json()
            assert {key: batched[key] for key in COMPARED} == {
                key: expected[key] for key in COMPARED
            }
            assert batched["event_count"] == 100


@pytest.mark.parametrize("spooled", [True, False], ids=["spool", "no-spool"])
@pytest.mark.parametrize("linger", [600, 0.001], ids=["queued", "in-flight"])
def test_a_program_that_returns_from_asyncio_run_with_events_queued_loses_none(
    api_server: ApiServer, account: Account, spool_file: Path, spooled: bool, linger: float
) -> None:
    """A long linger leaves every event queued when the loop ends; a short one has batches in
    flight, which the loop's end cancels. More events than the API takes in one batch, in
    batches of a few kilobytes, so that the exit hook must cut them as the sender does."""
    provider_id = job_id()
    spool_option = str(spool_file) if spooled else False
    script = textwrap.dedent(f"""
        import asyncio

        from trackerapi import AsyncTracker

        async def main():
            tracker = AsyncTracker(
                {account.api_key!r}, {api_server.base_url!r}, spool={spool_option!r},
                linger={linger!r}, max_batch_bytes=20_000,
            )
            job = await tracker.job({provider_id!r}, tag={account.tag!r})
            for n in range(1500):
                await job.info(f"note {{n}}")
            # no flush, no aclose: asyncio.run returns with events queued

        asyncio.run(main())
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT_DIR, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "rejected" not in result.stderr
    with account.reader(api_server.base_url) as reader:
        job = reader.get(f"/jobs/by-provider-id/{provider_id}").json()
    assert job["event_count"] == 1500
    if spooled:
        spool = Spool(spool_file)
        assert spool.count() == 0
        spool.close()


def test_configurations_are_pushed_with_an_admins_configure_key(
    api_server: ApiServer, account: Account
) -> None:
    tag = f"aio-push-{uuid.uuid4().hex[:8]}"
    model = JobConfig(tag=tag, name="Push", steps=[StepConfig(tag="a", name="A", points=1)])

    async def push() -> None:
        async with AsyncTracker(account.configure_key, api_server.base_url, spool=False) as ok:
            [created] = await ok.configs.push(model)
            assert (created.tag, created.version, created.result) == (tag, 1, "created")
        async with AsyncTracker(account.admin_key, api_server.base_url, spool=False) as lacking:
            with pytest.raises(ApiError) as refused:
                await lacking.configs.push(model)
            assert refused.value.status_code == 403

    asyncio.run(push())
