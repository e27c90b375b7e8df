"""Closing a tracker (or cancelling its sender) while callers report, send or flush: every
event a caller was told was queued is delivered or spooled, once, and nothing waits forever.
No API is needed: a server that never answers keeps a request in flight."""

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from root import ROOT_DIR
from tests.client.support import WAIT_S, silent_server
from trackerapi import AsyncTracker, RetryPolicy, Tracker, TrackerError
from trackerapi.core import Mode
from trackerapi.spool import Spool, key_id


def job_id() -> str:
    return f"close-{uuid.uuid4().hex[:12]}"


def spooled(path: Path, base_url: str, api_key: str) -> int:
    spool = Spool(path)
    try:
        return spool.count(base_url, key_id(api_key))
    finally:
        spool.close()


def test_every_event_accepted_while_the_tracker_closes_is_spooled(spool_file: Path) -> None:
    with silent_server() as base_url:
        tracker = Tracker("key", base_url, spool=spool_file, max_queue=5, timeout=WAIT_S)
        job = tracker.job_handle(job_id())
        accepted: list[int] = []
        refused: list[TrackerError] = []

        def report() -> None:
            count = 0
            try:
                while True:
                    job.step("step-01")
                    count += 1
            except TrackerError as error:
                refused.append(error)
            accepted.append(count)

        producers = [threading.Thread(target=report) for _ in range(3)]
        for producer in producers:
            producer.start()
        # The sender holds a batch in flight; the queue fills and the producers wait for room.
        give_up_at = time.monotonic() + WAIT_S
        while not (tracker._worker and tracker._worker.batches.full()):
            assert time.monotonic() < give_up_at, "the queue never filled"
            time.sleep(0.01)
        tracker.close(timeout=0.3)
        for producer in producers:
            producer.join(WAIT_S)
        assert not any(producer.is_alive() for producer in producers)

    assert len(refused) == 3
    assert all("closed" in str(error) for error in refused)
    assert spooled(spool_file, base_url, "key") == sum(accepted)


def test_cancelling_the_async_sender_while_it_spools_a_batch_keeps_the_batch_once(
    spool_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def cancelled_mid_append() -> int:
        tracker = AsyncTracker("key", "http://127.0.0.1:1", spool=spool_file, max_batch=5)
        assert tracker.spool is not None
        appending, release = threading.Event(), threading.Event()
        append = tracker.spool.append

        def slow_append(*args: Any) -> None:
            appending.set()
            release.wait(WAIT_S)
            append(*args)

        monkeypatch.setattr(tracker.spool, "append", slow_append)
        job = tracker.job_handle(job_id())
        for n in range(5):  # a full batch: the sender takes it at once and spools it
            await job.info(f"note {n}")
        sender = tracker._sender()
        assert await asyncio.to_thread(appending.wait, WAIT_S)
        sender.task.cancel()
        release.set()
        await asyncio.gather(sender.task, return_exceptions=True)
        queued = len(tracker._batches.items)
        await tracker.aclose(timeout=0)
        return queued

    assert asyncio.run(cancelled_mid_append()) == 0
    assert spooled(spool_file, "http://127.0.0.1:1", "key") == 5


def test_async_callers_waiting_for_room_are_refused_when_the_tracker_closes(
    spool_file: Path,
) -> None:
    async def closed_while_full(base_url: str) -> tuple[list[int], list[BaseException | None]]:
        tracker = AsyncTracker(
            "key", base_url, spool=spool_file, max_queue=5, max_batch=5, timeout=WAIT_S
        )
        job = tracker.job_handle(job_id())
        accepted: list[int] = []

        async def report() -> None:
            count = 0
            try:
                while True:
                    await job.step("step-01")
                    count += 1
            finally:
                accepted.append(count)

        producers = [asyncio.ensure_future(report()) for _ in range(3)]
        # The sender spools its first batch and sends it, for ever; the producers fill the
        # queue again and wait for room, which only the answer would make.
        give_up_at = time.monotonic() + WAIT_S
        while not (tracker._batches.full() and spooled(spool_file, base_url, "key") == 5):
            assert time.monotonic() < give_up_at, "the queue never filled"
            await asyncio.sleep(0.01)
        await tracker.aclose(timeout=0.3)
        ended = await asyncio.wait_for(asyncio.gather(*producers, return_exceptions=True), WAIT_S)
        return accepted, ended

    with silent_server() as base_url:
        accepted, ended = asyncio.run(closed_while_full(base_url))
    assert all(isinstance(error, TrackerError) for error in ended)
    assert spooled(spool_file, base_url, "key") == sum(accepted)


def test_flushes_waiting_when_the_async_tracker_closes_are_answered(spool_file: Path) -> None:
    async def flushes_while_closing(base_url: str) -> list[bool]:
        tracker = AsyncTracker("key", base_url, spool=spool_file, timeout=WAIT_S)
        job = tracker.job_handle(job_id())
        await job.info("in flight")
        in_flight = asyncio.ensure_future(tracker.flush(None))
        give_up_at = time.monotonic() + WAIT_S
        while tracker._batches.items:  # the sender took the event and the flush with it
            assert time.monotonic() < give_up_at, "the sender never took the batch"
            await asyncio.sleep(0.01)
        await job.info("queued")
        queued = asyncio.ensure_future(tracker.flush(None))
        await asyncio.sleep(0)
        await tracker.aclose(timeout=0.3)
        return list(await asyncio.wait_for(asyncio.gather(in_flight, queued), WAIT_S))

    with silent_server() as base_url:
        assert asyncio.run(flushes_while_closing(base_url)) == [False, False]
        assert spooled(spool_file, base_url, "key") == 2


def test_a_cancelled_async_sender_is_replaced_by_a_new_one(spool_file: Path) -> None:
    async def cancelled_sender() -> bool:
        tracker = AsyncTracker(
            "key", "http://127.0.0.1:1", spool=spool_file, retry=RetryPolicy(attempts=1)
        )
        sender = tracker._sender()
        sender.task.cancel()
        await asyncio.gather(sender.task, return_exceptions=True)
        await tracker.job_handle(job_id()).info("after the cancellation")
        flushed = await asyncio.wait_for(tracker.flush(None), WAIT_S)
        await tracker.aclose(timeout=0)
        return flushed

    assert asyncio.run(cancelled_sender()) is False  # nothing answers: the event is spooled
    assert spooled(spool_file, "http://127.0.0.1:1", "key") == 1


@pytest.mark.parametrize("mode", ["background", "sync"])
def test_a_cancelled_async_job_block_queues_its_error_and_waits_for_nothing(
    spool_file: Path, mode: Mode
) -> None:
    async def cancelled_block(base_url: str) -> None:
        tracker = AsyncTracker(
            "key", base_url, mode=mode, spool=spool_file, timeout=2 * WAIT_S,
            retry=RetryPolicy(deadline=2 * WAIT_S), exit_timeout=2 * WAIT_S,
        )  # fmt: skip

        async def block() -> None:
            async with tracker.job_handle(job_id()):
                await asyncio.sleep(3600)

        task = asyncio.ensure_future(block())
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait([task], timeout=WAIT_S)
        assert task.cancelled()
        await tracker.aclose(timeout=0)

    with silent_server() as base_url:
        asyncio.run(cancelled_block(base_url))
        spool = Spool(spool_file)
        [entry] = spool.head(base_url, key_id("key"), 10)
        spool.close()
    assert entry.data()["kind"] == "error"
    assert entry.data()["message"].startswith("CancelledError")


def test_aclose_ends_the_sender_it_wakes_from_its_linger(spool_file: Path) -> None:
    """stop() wakes the lingering sender and cancels it at once: the cancellation must not be
    lost to the wake-up, or the sender sends its batch and aclose waits for the request."""

    async def close_while_lingering(base_url: str) -> None:
        tracker = AsyncTracker(
            "key", base_url, spool=spool_file, linger=WAIT_S, timeout=2 * WAIT_S,
            retry=RetryPolicy(deadline=2 * WAIT_S),
        )  # fmt: skip
        await tracker.job_handle(job_id()).info("lingering")
        await asyncio.sleep(0)  # the sender wakes for the event and lingers for more
        await asyncio.wait_for(tracker.aclose(timeout=0), WAIT_S)

    with silent_server() as base_url:
        asyncio.run(close_while_lingering(base_url))
        assert spooled(spool_file, base_url, "key") == 1


def test_a_batch_the_sender_failed_to_send_after_spooling_it_is_spooled_once(
    spool_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url = "http://127.0.0.1:1"
    tracker = Tracker("key", base_url, spool=spool_file, retry=RetryPolicy(attempts=1))
    assert tracker.spool is not None
    head = tracker.spool.head
    failures = [RuntimeError("the spool could not be read")]

    def failing_head(*args: Any) -> Any:
        if failures:
            raise failures.pop()
        return head(*args)

    monkeypatch.setattr(tracker.spool, "head", failing_head)
    job = tracker.job_handle(job_id())
    for n in range(3):
        job.info(f"note {n}")
    assert not tracker.flush(WAIT_S)  # spooled, then the sender failed unexpectedly
    assert not tracker.flush(WAIT_S)  # nothing answers: the batch stays spooled
    tracker.close(timeout=0)
    assert spooled(spool_file, base_url, "key") == 3


def test_the_async_sender_retries_a_failed_batch_with_the_next_one_not_at_once(
    spool_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing_spool() -> tuple[bool, int, int]:
        tracker = AsyncTracker("key", "http://127.0.0.1:1", spool=spool_file, linger=0.001)
        assert tracker.spool is not None
        appends: list[object] = []

        def failing_append(*args: Any) -> None:
            appends.append(args)
            raise OSError("no space left on device")

        append = tracker.spool.append
        monkeypatch.setattr(tracker.spool, "append", failing_append)
        await tracker.job_handle(job_id()).info("held")
        flushed = await tracker.flush(WAIT_S)
        after_flush = len(appends)
        await asyncio.sleep(0.2)  # many lingers: a sender that put the batch back retries it
        after_a_while = len(appends)
        monkeypatch.setattr(tracker.spool, "append", append)
        await tracker.aclose(timeout=0)  # the held event is spooled
        return flushed, after_flush, after_a_while

    flushed, after_flush, after_a_while = asyncio.run(failing_spool())
    assert not flushed
    assert after_a_while == after_flush == 1
    assert spooled(spool_file, "http://127.0.0.1:1", "key") == 1


@pytest.mark.parametrize("client", ["Tracker", "AsyncTracker"])
def test_the_exit_hook_ends_within_exit_timeout_and_spools_what_it_could_not_send(
    spool_file: Path, client: str
) -> None:
    """A server that never answers, requests that would wait two minutes: the program still
    ends within its exit_timeout (the subprocess's bound is generous), its events spooled."""
    with silent_server() as base_url:
        options = (
            f"{base_url!r}, spool={str(spool_file)!r}, exit_timeout=1, timeout=120, "
            "retry=RetryPolicy(deadline=120)"
        )
        report = (
            "for n in range(3):\n    tracker.job_handle('exit').info(f'note {n}')"
            if client == "Tracker"
            else "async def main():\n"
            "    for n in range(3):\n        await tracker.job_handle('exit').info(f'note {n}')\n"
            "asyncio.run(main())"
        )
        program = (
            "import asyncio\nfrom trackerapi import AsyncTracker, RetryPolicy, Tracker\n"
            f"tracker = {client}('key', {options})\n{report}\n"
        )
        finished = subprocess.run(
            [sys.executable, "-c", program], cwd=ROOT_DIR, capture_output=True, text=True,
            timeout=WAIT_S,
        )  # fmt: skip
        assert finished.returncode == 0, finished.stderr
        assert spooled(spool_file, base_url, "key") == 3
