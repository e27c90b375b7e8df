"""Background mode at volume, and at interpreter exit."""

import random
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from root import ROOT_DIR
from tests.client.support import PIPELINE_STEPS, Account, ApiServer, free_port
from trackerapi import Rejection, Tracker

TAGS = [tag for tag, _, _ in PIPELINE_STEPS]
COMPARED = (
    "status",
    "progress",
    "completed_points",
    "steps_completed",
    "cost",
    "event_count",
    "error_count",
    "unresolved_error_count",
)


def plan(rng: random.Random, count: int) -> list[tuple[str, str | None, str | None]]:
    """Events as (kind, step, message): mostly steps (repeats included), errors, notes."""
    events: list[tuple[str, str | None, str | None]] = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.75:
            events.append(("step", rng.choice(TAGS), None))
        elif roll < 0.9:
            events.append(("error", rng.choice([*TAGS, None]), "failed"))
        else:
            events.append(("info", None, "note"))
    return events


def test_five_thousand_background_events_end_as_if_sent_one_by_one(
    api_server: ApiServer, account: Account, spool_file: Path
) -> None:
    rng = random.Random(11)
    plans = [plan(rng, 100) for _ in range(50)]
    rejections: list[Rejection] = []
    tracker = Tracker(
        account.api_key, api_server.base_url, spool=spool_file, on_error=rejections.append
    )
    run = uuid.uuid4().hex[:8]
    jobs = [tracker.job(f"bg-{run}-{n}", tag=account.tag) for n in range(50)]
    # Interleaved across jobs, as a script running them side by side would send them.
    for index in range(100):
        for job, events in zip(jobs, plans, strict=True):
            kind, step, message = events[index]
            if kind == "step":
                assert step is not None
                job.step(step)
            elif kind == "error":
                job.error(message or "", step=step)
            else:
                job.info(message or "")
    assert tracker.flush(timeout=300)
    assert rejections == []
    tracker.close()

    with account.reader(api_server.base_url) as reader:
        for n, events in enumerate(plans):
            one_by_one = reader.post(
                "/jobs", json={"provider_job_id": f"seq-{run}-{n}", "tag": account.tag}
            ).json()
            for kind, step, message in events:
                body: dict[str, Any] = {"kind": kind, "name": step, "message": message}
                answer = reader.post(f"/jobs/{one_by_one['id']}/events", json=body)
                assert answer.status_code == 201, answer.text
            expected = reader.get(f"/jobs/{one_by_one['id']}").json()
            batched = reader.get(f"/jobs/{jobs[n].id}").json()
            assert {key: batched[key] for key in COMPARED} == {
                key: expected[key] for key in COMPARED
            }
            assert batched["event_count"] == 100


def test_a_script_that_queues_events_and_exits_at_once_delivers_them_all(
    api_server: ApiServer, account: Account, spool_file: Path
) -> None:
    provider_id = f"exit-{uuid.uuid4().hex[:8]}"
    script = textwrap.dedent(f"""
        from trackerapi import Tracker
        tracker = Tracker({account.api_key!r}, {api_server.base_url!r}, spool={str(spool_file)!r})
        job = tracker.job({provider_id!r}, tag={account.tag!r})
        for n in range(300):
            job.info(f"note {{n}}")
        # no flush, no close: the interpreter exits with 300 events queued
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT_DIR, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    with httpx.Client(
        base_url=api_server.base_url, headers={"X-API-Key": account.api_key}, timeout=30
    ) as reader:
        job = reader.get(f"/jobs/by-provider-id/{provider_id}").json()
    assert job["event_count"] == 300


def test_a_tracker_the_script_dropped_still_spools_its_queue_at_exit(
    spool_file: Path,
) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    script = textwrap.dedent(f"""
        import gc

        from trackerapi import RetryPolicy, Tracker

        def main():
            # A long linger: nothing leaves before the exit-time flush does.
            tracker = Tracker("key", {unreachable!r}, spool={str(spool_file)!r},
                              retry=RetryPolicy(attempts=1), linger=600)
            job = tracker.job_handle("dropped")
            for n in range(20):
                job.info(f"note {{n}}")

        main()
        gc.collect()  # as it runs in any long script: the tracker is gone, its queue is not
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT_DIR, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(spool_file) as spool:
        assert spool.execute("SELECT count(*) FROM spool").fetchone() == (20,)


def test_an_event_is_sent_as_it_was_when_reported_and_bad_metadata_raises_to_the_caller(
    api_server: ApiServer, account: Account, spool_file: Path
) -> None:
    # A long linger: the sender has not touched the events when the caller changes them.
    tracker = Tracker(account.api_key, api_server.base_url, spool=spool_file, linger=600)
    job = tracker.job(f"meta-{uuid.uuid4().hex[:8]}", tag=account.tag)
    metadata: dict[str, Any] = {"pages": 1}
    first = job.info("first", metadata=metadata)
    metadata["pages"] = 2
    with pytest.raises(AttributeError):
        first.event_id = "another"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        first.message = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError, match="metadata must be JSON"):
        job.info("unserialisable", metadata={"when": object()})
    job.info("after", metadata=metadata)
    assert tracker.flush(timeout=120)  # the sender thread is alive and delivered both
    tracker.close()
    with account.reader(api_server.base_url) as reader:
        items = reader.get(f"/jobs/{job.id}/events").json()["items"]
    assert [(item["message"], item["metadata"]) for item in items] == [
        ("first", {"pages": 1}),
        ("after", {"pages": 2}),
    ]
