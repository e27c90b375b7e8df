"""The `trackerapi` command end to end in subprocesses, and configuration pushes."""

import json
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from tests.client.support import (
    PIPELINE_STEPS,
    Account,
    ApiServer,
    free_port,
    run_cli,
    server_events,
)
from trackerapi import ApiError, JobConfig, StepConfig, Tracker

TAGS = [tag for tag, _, _ in PIPELINE_STEPS]


def test_the_cli_reports_a_job_end_to_end(
    api_server: ApiServer, account: Account, spool_file: Path
) -> None:
    env = {
        "TRACKER_URL": api_server.base_url,
        "TRACKER_API_KEY": account.api_key,
        "TRACKER_SPOOL": str(spool_file),
    }
    provider_id = f"sh-{uuid.uuid4().hex[:8]}"
    started = run_cli("job", "start", provider_id, "--tag", account.tag, env=env)
    assert started.returncode == 0, started.stderr
    job = json.loads(started.stdout)
    assert (job["provider_job_id"], job["status"]) == (provider_id, "pending")
    again = run_cli("job", "start", provider_id, "--tag", account.tag, env=env)
    assert json.loads(again.stdout)["id"] == job["id"]

    step = run_cli("step", provider_id, TAGS[0], "--metadata", '{"pages": 3}', env=env)
    assert step.returncode == 0, step.stderr
    assert (
        run_cli("error", provider_id, "scanner jammed", "--step", TAGS[1], env=env).returncode == 0
    )
    assert run_cli("info", provider_id, "retrying", env=env).returncode == 0
    events = server_events(account, api_server, job["id"])
    assert [(e["kind"], e["name"], e["message"]) for e in events] == [
        ("step", TAGS[0], None),
        ("error", TAGS[1], "scanner jammed"),
        ("info", None, "retrying"),
    ]
    assert events[0]["event_id"] == step.stdout.strip()
    assert events[0]["metadata"] == {"pages": 3}

    refused = run_cli("step", provider_id, "no-such-step", env=env)
    assert refused.returncode == 1
    assert "Unknown step 'no-such-step'" in refused.stderr
    assert run_cli("step", "no-such-job", TAGS[0], env=env).returncode == 1
    assert run_cli("job", "start", provider_id, "--tag", "no-such-tag", env=env).returncode == 1
    assert run_cli("step", provider_id, env=env).returncode == 2  # usage: the tag is missing
    assert run_cli("step", provider_id, TAGS[0], "--metadata", "[1]", env=env).returncode == 2
    assert run_cli("frobnicate", env=env).returncode == 2
    assert run_cli("step", provider_id, TAGS[0], env={**env, "TRACKER_API_KEY": ""}).returncode == 2
    assert len(server_events(account, api_server, job["id"])) == 3


def test_the_cli_ends_within_its_timeout_when_nothing_answers(spool_file: Path) -> None:
    env = {
        "TRACKER_URL": f"http://127.0.0.1:{free_port()}",
        "TRACKER_API_KEY": "trk_x",
        "TRACKER_SPOOL": str(spool_file),
    }
    began = time.monotonic()
    spooled = run_cli("--timeout", "3", "step", "job-1", "fetch", env=env)
    assert spooled.returncode == 0, spooled.stderr
    assert "spooled" in spooled.stderr
    strict = run_cli("--timeout", "3", "--strict", "info", "job-1", "x", env=env)
    assert strict.returncode == 1
    assert time.monotonic() - began < 100  # a bound against hanging, not a timing


def test_configs_schema_is_the_file_format(tmp_path: Path) -> None:
    result = run_cli("configs", "schema", env={})
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["required"] == ["job_configs"]
    assert "step_configurations" in schema["$defs"]["JobConfig"]["properties"]


def test_configs_push_answers_created_unchanged_and_new_version(
    api_server: ApiServer, account: Account, tmp_path: Path
) -> None:
    tag = f"push-{uuid.uuid4().hex[:8]}"
    tracker = Tracker(account.configure_key, api_server.base_url, spool=False)
    model = JobConfig(
        tag=tag, name="Push", steps=[StepConfig(tag="a", name="A", points=2, cost=Decimal("1.25"))]
    )
    [created] = tracker.configs.push(model)
    assert (created.tag, created.version, created.result) == (tag, 1, "created")
    assert tracker.configs.push([model])[0].result == "unchanged"

    yaml_file = tmp_path / "configs.yaml"
    yaml_file.write_text(
        f"job_configs:\n  - tag: {tag}\n    name: Push\n    step_configurations:\n"
        "      - {tag: a, name: A, points: 2, cost: '1.25'}\n"
        "      - {tag: b, name: B, points: 1, cost: 0}\n"
    )
    env = {"TRACKER_URL": api_server.base_url, "TRACKER_API_KEY": account.configure_key}
    pushed = run_cli("configs", "push", str(yaml_file), env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip() == f"{tag} v2: new_version"
    json_file = tmp_path / "configs.json"
    json_file.write_text(
        json.dumps(
            {
                "job_configs": [
                    {
                        "tag": tag,
                        "name": "Push",
                        "step_configurations": [
                            {"tag": "a", "name": "A", "points": 2, "cost": "1.25"},
                            {"tag": "b", "name": "B", "points": 1, "cost": "0"},
                        ],
                    }
                ]
            }
        )
    )
    assert [o.result for o in tracker.configs.push(json_file)] == ["unchanged"]

    bad = tmp_path / "bad.json"
    bad.write_text('{"job_configs": [{"tag": "Bad Tag", "name": "x", "step_configurations": []}]}')
    invalid = run_cli("configs", "push", str(bad), env=env)
    assert invalid.returncode == 2
    assert "job_configs.0.tag" in invalid.stderr
    # An admin's key without the scope, and a client's key, are refused (and not retried).
    for key in (account.admin_key, account.api_key):
        refused = run_cli("configs", "push", str(json_file), env={**env, "TRACKER_API_KEY": key})
        assert refused.returncode == 1
        assert "lacks the 'configure' scope" in refused.stderr
    with pytest.raises(ApiError) as caught:
        Tracker(account.admin_key, api_server.base_url, spool=False).configs.push(model)
    assert caught.value.status_code == 403
    missing = run_cli("configs", "push", str(json_file), env={"TRACKER_URL": api_server.base_url})
    assert missing.returncode == 2
    assert "no API key" in missing.stderr
    tracker.close()
