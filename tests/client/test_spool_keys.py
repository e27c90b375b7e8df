"""The spool is shared by every client on the machine, but an entry is only ever sent with the
API key it was spooled with: another customer's flush leaves it alone."""

import json
import sqlite3
import uuid
from pathlib import Path

from tests.client.support import (
    PIPELINE_STEPS,
    Account,
    ApiServer,
    FaultProxy,
    create_account,
    run_cli,
)
from trackerapi import RetryPolicy, Tracker
from trackerapi.spool import key_id

TAGS = [tag for tag, _, _ in PIPELINE_STEPS]
ONE_TRY = RetryPolicy(attempts=1)


def find_job(account: Account, server: ApiServer, provider_id: str) -> dict[str, object] | None:
    with account.reader(server.base_url) as reader:
        answer = reader.get(f"/jobs/by-provider-id/{provider_id}")
    if answer.status_code == 404:
        return None
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def test_each_key_sends_only_its_own_spooled_entries(
    api_server: ApiServer, account: Account, spool_file: Path
) -> None:
    other = create_account()
    proxy = FaultProxy(api_server.port)
    proxy.fail_with(500)
    ours = Tracker(account.api_key, proxy.base_url, spool=spool_file, retry=ONE_TRY)
    theirs = Tracker(other.api_key, proxy.base_url, spool=spool_file, retry=ONE_TRY)
    our_id, their_id = f"ours-{uuid.uuid4().hex[:8]}", f"theirs-{uuid.uuid4().hex[:8]}"
    # No customer_id: the job belongs to whoever's key creates it.
    ours.job(our_id, tag=account.tag).step(TAGS[0])
    theirs.job(their_id, tag=other.tag).step(TAGS[0])
    assert not ours.flush()
    assert not theirs.flush()
    assert ours.spool is not None
    assert ours.spool.count(proxy.base_url, key_id(account.api_key)) == 2
    assert ours.spool.count(proxy.base_url, key_id(other.api_key)) == 2

    proxy.fail_with(None)
    assert theirs.flush()
    theirs.close()
    assert find_job(other, api_server, their_id) is not None
    assert find_job(other, api_server, our_id) is None  # not created with their key
    assert ours.spool.count(proxy.base_url, key_id(account.api_key)) == 2
    ours.close(timeout=0)

    env = {"TRACKER_URL": proxy.base_url, "TRACKER_API_KEY": account.api_key}
    flushed = run_cli("--spool", str(spool_file), "flush", env=env)
    assert flushed.returncode == 0, flushed.stderr
    assert flushed.stdout.strip() == "spool empty"
    job = find_job(account, api_server, our_id)
    assert job is not None
    assert (job["customer_id"], job["steps_completed"]) == (account.customer_id, 1)
    proxy.close()


def test_an_old_spool_file_is_migrated_and_its_entries_sent_only_when_adopted(
    api_server: ApiServer, account: Account, spool_file: Path
) -> None:
    provider_id = f"legacy-{uuid.uuid4().hex[:8]}"
    old = sqlite3.connect(spool_file)
    old.executescript("""
        CREATE TABLE spool (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, base_url TEXT NOT NULL, kind TEXT NOT NULL,
            body TEXT NOT NULL, spooled_at TEXT NOT NULL
        );
        CREATE INDEX spool_by_url ON spool (base_url, seq);
    """)
    body = json.dumps({"provider_job_id": provider_id, "tag": account.tag})
    old.execute(
        "INSERT INTO spool (base_url, kind, body, spooled_at) VALUES (?, 'job', ?, '')",
        (api_server.base_url, body),
    )
    old.commit()
    old.close()

    env = {"TRACKER_URL": api_server.base_url, "TRACKER_API_KEY": account.api_key}
    flushed = run_cli("--spool", str(spool_file), "flush", env=env)
    assert flushed.returncode == 0, flushed.stderr
    assert "1 entries spooled by an older client" in flushed.stderr
    assert "--adopt-legacy" in flushed.stderr
    assert find_job(account, api_server, provider_id) is None

    flushed = run_cli("--spool", str(spool_file), "flush", "--adopt-legacy", env=env)
    assert flushed.returncode == 0, flushed.stderr
    assert flushed.stdout.strip() == "spool empty"
    assert flushed.stderr == ""
    assert find_job(account, api_server, provider_id) is not None
