"""The handlers as Lambda runs them: each in a process of its own, through the runtime interface
client of the AWS base image (`python -m awslambdaric HANDLER`), against a Lambda Runtime API
served on loopback (benchmarks/lambda_runtime.py), with production settings. The handler
strings are the ones the Dockerfile and template.yaml give."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from benchmarks.lambda_runtime import Function, running_function
from config import config
from tests.deployment.test_deployment import dockerfile_instructions
from tests.deployment.test_template import functions
from tests.helpers.lambda_events import http_api_event, scheduler_event
from tests.helpers.processes import database_env, run_python

PRODUCTION = {
    "APP_ENV": "production",
    "SECRET_KEY": "runtime-client-test-secret-key-0123456789",
    "WEBHOOK_SECRET_KEYS": "runtime-client-test-webhook-key-0123456789",
    "LOG_LEVEL": "WARNING",
}


def image_handler() -> str:
    [cmd] = [rest for keyword, rest in dockerfile_instructions() if keyword == "CMD"]
    [target] = yaml.safe_load(cmd)
    return str(target)


def template_handler(function: str) -> str:
    [target] = functions()[function]["Properties"]["ImageConfig"]["Command"]
    return str(target)


def production_env() -> dict[str, str]:
    return {**PRODUCTION, **database_env(config.database.url)}


@pytest.fixture
def api_function() -> Iterator[Function]:
    with running_function(template_handler("ApiFunction"), production_env()) as function:
        function.wait_until_ready()
        yield function


def test_the_image_and_the_api_function_name_the_same_handler() -> None:
    assert image_handler() == template_handler("ApiFunction") == "app.main.handler"


def test_the_api_function_answers_http_api_events(api_function: Function) -> None:
    assert api_function.init_ms is not None
    first = api_function.runtime.invoke(http_api_event("GET", "/health"))
    assert first.kind == "response"
    assert first.body["statusCode"] == 200
    assert '"database":"ok"' in first.body["body"]
    missing = api_function.runtime.invoke(http_api_event("GET", "/no-such-thing"))
    assert missing.kind == "response"
    assert missing.body["statusCode"] == 404


def test_an_unknown_event_is_reported_as_the_invocation_s_error(api_function: Function) -> None:
    answer = api_function.runtime.invoke({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]})
    assert answer.kind == "error"
    assert answer.body["errorType"] == "UnknownEvent"
    assert "aws:sqs" in answer.body["errorMessage"]
    assert answer.request_id is not None
    assert answer.body["requestId"] == answer.request_id
    # The instance goes on serving.
    after = api_function.runtime.invoke(http_api_event("GET", "/health"))
    assert after.body["statusCode"] == 200


@pytest.mark.usefixtures("committed")  # the run is recorded in the test database
@pytest.mark.parametrize("function", ["WorkerFunction", "MigrationFunction"])
def test_the_functions_without_http_run_a_schedule(function: str) -> None:
    with running_function(template_handler(function), production_env()) as running:
        running.wait_until_ready()
        answer = running.runtime.invoke(scheduler_event("auth_cleanup"))
    assert answer.kind == "response", running.output()
    assert answer.body["task"] == "auth_cleanup"
    assert set(answer.body["counts"]) == {
        "sessions_deleted",
        "login_failures_cleared",
        "task_runs_deleted",
        "webhook_secrets_encrypted",
    }


def test_the_worker_function_answers_an_http_event_all_the_same() -> None:
    with running_function(template_handler("WorkerFunction"), production_env()) as running:
        running.wait_until_ready()
        answer = running.runtime.invoke(http_api_event("GET", "/health"))
    assert answer.kind == "response"
    assert answer.body["statusCode"] == 200


@pytest.mark.parametrize("function", ["ApiFunction", "WorkerFunction"])
def test_an_init_failure_is_reported_through_init_error(function: str) -> None:
    # Production, and no database configured.
    with running_function(template_handler(function), PRODUCTION) as running:
        answer = running.runtime.init_error()
        assert running.process.wait(timeout=60) != 0
    assert answer.kind == "init-error"
    assert answer.body["errorType"] == "ConfigError"
    assert "no database is configured" in answer.body["errorMessage"]
    assert running.runtime.first_next_at is None


# Warm invocations -------------------------------------------------------------------------------

WARM_INVOCATIONS = """
import json, sys
from benchmarks.lambda_event import count_thread_starts
from app.main import handler
from tests.helpers.lambda_events import LambdaContext, http_api_event

events = [http_api_event("GET", "/health"), http_api_event("GET", "/no-such-thing")]
handler(events[0], LambdaContext())  # the first invocation may set things up
threads_started = count_thread_starts()
statuses = [handler(event, LambdaContext())["statusCode"] for event in events * 5]
print(json.dumps({"statuses": statuses, "threads": threads_started()}))
"""


def warm_invocations(env: dict[str, Any]) -> dict[str, Any]:
    result = run_python("-c", WARM_INVOCATIONS, env={**database_env(config.database.url), **env})
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return answer


def test_on_lambda_a_warm_invocation_starts_no_thread() -> None:
    answer = warm_invocations({"LAMBDA_MODE": "true"})
    assert answer["statuses"] == [200, 404] * 5
    assert answer["threads"] == 0


def test_outside_lambda_sync_routes_run_in_worker_threads() -> None:
    # The same invocations with the thread pool, as under uvicorn: each one that runs a sync
    # route (`/health`; the 404 runs none) starts a worker thread, which the Lambda mode saves.
    answer = warm_invocations({"LAMBDA_MODE": "false"})
    assert answer["statuses"] == [200, 404] * 5
    assert answer["threads"] >= 5


# SnapStart ---------------------------------------------------------------------------------------


def test_under_snapstart_the_hooks_run_around_the_snapshot_and_the_instance_serves() -> None:
    env = {**production_env(), "LOG_LEVEL": "INFO", "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"}
    with running_function(template_handler("ApiFunction"), env) as function:
        function.wait_until_ready()
        answer = function.runtime.invoke(http_api_event("GET", "/health"))
        log = function.output()
    assert function.runtime.restore_next_at is not None
    assert function.runtime.first_next_at is not None
    assert function.runtime.restore_next_at < function.runtime.first_next_at
    assert answer.kind == "response"
    assert answer.body["statusCode"] == 200
    before = log.index("Before the snapshot: database connections closed")
    after = log.index("Restored from a snapshot: random state reseeded")
    assert before < after


HOOKS = """
import json
from snapshot_restore_py import get_after_restore, get_before_snapshot
import app.main
names = [
    [hook.__module__ + "." + hook.__name__ for hook, _, _ in registered]
    for registered in (get_before_snapshot(), get_after_restore())
]
print(json.dumps(names))
"""


@pytest.mark.parametrize(
    ("lambda_mode", "registered"),
    [
        ("true", [["app.snapstart.before_snapshot"], ["app.snapstart.after_restore"]]),
        ("false", [[], []]),
    ],
)
def test_the_hooks_are_registered_on_lambda_only(lambda_mode: str, registered: list[Any]) -> None:
    result = run_python(
        "-c", HOOKS, env={**database_env(config.database.url), "LAMBDA_MODE": lambda_mode}
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == registered
