"""Closing a tracker while callers report, send or flush: every event a caller was told was
queued is delivered or spooled, and nothing waits forever. No API is needed: a server that never
answers keeps a request in flight."""

import threading
import time
import uuid
from pathlib import Path

from tests.client.support import WAIT_S, silent_server
from trackerapi import Tracker, TrackerError
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
