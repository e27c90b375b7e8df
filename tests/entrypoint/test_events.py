"""The Lambda entry point with non-HTTP events: schedules run the registered tasks, the deploy's
custom resource runs the migrations and answers CloudFormation, anything else is refused."""

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text

from app.entrypoint import UnknownEvent
from app.main import handler
from app.models import LoginFailure, UserSession
from app.scheduled import SCHEDULED_TASKS, TaskRun, UnknownTask, run_task
from app.services.housekeeping import delete_dead_sessions
from config import config
from config.database import Database, scratch_database
from tests.helpers.capture import captured_records
from tests.helpers.factories import create_user
from tests.helpers.lambda_events import LambdaContext, scheduled_event, scheduler_event
from tests.helpers.processes import database_env, run_python

NOW = datetime.now(UTC)


@pytest.fixture
def auth_state(committed: None) -> Iterator[dict[str, Any]]:
    """Committed sessions and failed logins, some dead or stale and some live."""
    window = timedelta(minutes=config.settings.login_failure_window_minutes)
    # Now, not when the module was imported: a long run would make "fresh" failures stale.
    now = datetime.now(UTC)
    with config.database.SessionLocal() as session:
        user = create_user(session)
        stale, fresh = "stale@example.com", "fresh@example.com"
        session.add_all(
            [
                *(
                    LoginFailure(
                        email=stale, client_address="192.0.2.1", failed_at=now - 2 * window
                    )
                    for _ in range(3)
                ),
                *(
                    LoginFailure(
                        email=fresh, client_address="192.0.2.1", failed_at=now - window / 2
                    )
                    for _ in range(2)
                ),
            ]
        )
        sessions = {
            "expired": UserSession(user_id=user.id, expires_at=NOW - timedelta(minutes=1)),
            "revoked": UserSession(
                user_id=user.id, expires_at=NOW + timedelta(days=1), revoked_at=NOW
            ),
            "live": UserSession(user_id=user.id, expires_at=NOW + timedelta(days=1)),
        }
        session.add_all(sessions.values())
        session.commit()
        yield {"stale": stale, "fresh": fresh, "live": sessions["live"].id}


def remaining_state() -> tuple[list[uuid.UUID], dict[str, int]]:
    with config.database.SessionLocal() as session:
        sessions = list(session.scalars(select(UserSession.id)))
        rows = session.execute(
            select(LoginFailure.email, func.count().label("failures")).group_by(LoginFailure.email)
        )
        counts = {row.email: row.failures for row in rows}
    return sessions, counts


@pytest.mark.parametrize(
    "event", [scheduler_event("auth_cleanup"), scheduled_event("tracker-prod-auth_cleanup")]
)
def test_a_schedule_runs_the_auth_cleanup(
    auth_state: dict[str, Any], event: dict[str, Any]
) -> None:
    answer = handler(event, LambdaContext())
    assert answer == {
        "task": "auth_cleanup",
        "counts": {
            "sessions_deleted": 2,
            "login_failures_cleared": 3,
            "task_runs_deleted": 0,
            "webhook_secrets_encrypted": 0,
        },
    }
    sessions, counts = remaining_state()
    assert sessions == [auth_state["live"]]
    assert counts == {auth_state["fresh"]: 2}
    # Running again finds nothing more to do.
    assert handler(event, LambdaContext())["counts"] == {
        "sessions_deleted": 0,
        "login_failures_cleared": 0,
        "task_runs_deleted": 0,
        "webhook_secrets_encrypted": 0,
    }


def test_the_cleanup_still_throttles_an_account_inside_its_window(
    auth_state: dict[str, Any],
) -> None:
    run_task("auth_cleanup")
    assert remaining_state()[1] == {auth_state["fresh"]: 2}


def test_work_is_done_in_bounded_batches(committed: None) -> None:
    with config.database.SessionLocal() as session:
        user = create_user(session)
        session.add_all(
            UserSession(user_id=user.id, expires_at=NOW - timedelta(hours=hour))
            for hour in range(1, 6)
        )
        session.commit()
    batches: list[int] = []

    def step(session: Any, limit: int) -> int:
        done = delete_dead_sessions(session, now=NOW, limit=limit)
        batches.append(done)
        return done

    run = TaskRun(
        now=NOW, batch_size=2, max_batches=2, session_factory=config.database.SessionLocal
    )
    assert run.in_batches(step) == 4
    assert batches == [2, 2]  # stopped at max_batches, one left for the next run
    assert len(remaining_state()[0]) == 1
    unbounded = TaskRun(
        now=NOW, batch_size=2, max_batches=10, session_factory=config.database.SessionLocal
    )
    assert unbounded.in_batches(step) == 1
    assert batches[-1] == 1  # a short batch ends the run


def test_a_schedule_naming_no_registered_task_is_a_logged_error() -> None:
    with captured_records("tracker.lambda") as records, pytest.raises(UnknownTask):
        handler(scheduler_event("no-such-task"), LambdaContext())
    assert "no-such-task" in records[0].getMessage()
    assert "auth_cleanup" in records[0].getMessage()
    with pytest.raises(UnknownEvent, match="names no task"):
        handler(scheduled_event("some-other-rule"), LambdaContext())


@pytest.mark.parametrize(
    ("event", "named"),
    [
        ({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]}, "aws:sqs"),
        ({"source": "aws.s3", "detail-type": "Object Created"}, "aws.s3"),
        ({}, "keys []"),
    ],
)
def test_an_event_of_no_known_shape_is_a_logged_error_naming_it(
    event: dict[str, Any], named: str
) -> None:
    with captured_records("tracker.lambda") as records, pytest.raises(UnknownEvent):
        handler(event, LambdaContext())
    [record] = records
    assert record.levelname == "ERROR"
    assert named in record.getMessage()


def test_every_registered_task_has_a_summary_and_a_plain_name() -> None:
    for name, task in SCHEDULED_TASKS.items():
        assert name == task.name
        assert task.summary
        assert name.replace("-", "").replace("_", "").isalnum()
        assert name == name.lower()


# The deploy's custom resource -------------------------------------------------------------------


class ResponseReceiver:
    """A local HTTP server standing in for the presigned S3 URL CloudFormation gives."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(
                    {
                        "path": self.path,
                        "content_type": self.headers.get("Content-Type"),
                        "body": json.loads(self.rfile.read(length)),
                    }
                )
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, request_id: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/stack-responses/{request_id}?X-Amz-Signature=abc"


@pytest.fixture
def receiver() -> Iterator[ResponseReceiver]:
    receiver = ResponseReceiver()
    receiver.thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def custom_resource_event(
    request_type: str, response_url: str, *, image_tag: str = "v2"
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "RequestType": request_type,
        "ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:tracker-migrate",
        "ResponseURL": response_url,
        "StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/tracker/0a1b2c3d",
        "RequestId": str(uuid.uuid4()),
        "LogicalResourceId": "Migrations",
        "ResourceType": "Custom::Migrations",
        "ResourceProperties": {
            "ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:tracker-migrate",
            "ImageTag": image_tag,
        },
    }
    if request_type != "Create":
        event["PhysicalResourceId"] = "tracker-migrations"
    if request_type == "Update":
        event["OldResourceProperties"] = {**event["ResourceProperties"], "ImageTag": "v1"}
    return event


def invoke_in_production(events: list[dict[str, Any]], env: dict[str, str]) -> list[Any]:
    """Call app.main.handler with each event in a fresh interpreter configured for production,
    as the migration function is."""
    snippet = (
        "import json, os\n"
        "from app import deploy\n"
        "from app.worker import handler\n"
        "from tests.helpers.lambda_events import LambdaContext\n"
        # The local receiver stands in for S3: its plain-HTTP address is let through here only.
        "deploy.RESPONSE_URL_SCHEMES = frozenset({'http'})\n"
        "deploy.RESPONSE_URL_HOST_SUFFIXES = ('127.0.0.1',)\n"
        "for event in json.loads(os.environ['EVENTS']):\n"
        "    print(json.dumps(handler(event, LambdaContext())))\n"
    )
    result = run_python(
        "-c",
        snippet,
        env={
            "APP_ENV": "production",
            "SECRET_KEY": "custom-resource-test-secret-key-0123456789",
            "WEBHOOK_SECRET_KEYS": "custom-resource-test-webhook-key-0123456789",
            "AWS_LAMBDA_FUNCTION_NAME": "tracker-migrate",
            "EVENTS": json.dumps(events),
            **env,
        },
    )
    assert result.returncode == 0, result.stderr
    # Without the metrics' lines (on Lambda they go to stdout too: app.internal.metrics).
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    return [answer for answer in printed if "_aws" not in answer]


def head_revision(url: Any) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.scalars(text("SELECT version_num FROM alembic_version")))
    finally:
        engine.dispose()


def test_create_and_update_migrate_and_delete_changes_nothing(
    receiver: ResponseReceiver,
) -> None:
    with config.database.engine.connect() as connection:
        test_head = list(connection.scalars(text("SELECT version_num FROM alembic_version")))
    with scratch_database(config.database.url) as url:
        events = [
            custom_resource_event(kind, receiver.url(kind))
            for kind in ("Create", "Update", "Delete")
        ]
        answers = invoke_in_production(events, database_env(url))
        assert head_revision(url) == test_head
        # Through RDS Proxy no connection can carry the session settings: the database has them.
        behind_proxy = Database(url, connection_options=False, null_pool=True)
        with behind_proxy.engine.connect() as connection:
            shown = [
                connection.scalar(text(f"SHOW {name}"))
                for name in ("timezone", "jit", "statement_timeout")
            ]
        behind_proxy.dispose()
        assert shown == ["UTC", "off", "10s"]
        with create_engine(url).connect() as connection:
            tables = connection.scalar(
                select(func.count())
                .select_from(text("pg_tables"))
                .where(text("schemaname = 'public'"))
            )
    assert [answer["Status"] for answer in answers] == ["SUCCESS"] * 3
    create, update, delete = receiver.received
    assert create["path"].startswith("/stack-responses/Create?X-Amz-Signature=")
    assert create["content_type"] == ""
    assert create["body"] | {"Reason": ""} == {
        "Status": "SUCCESS",
        "Reason": "",
        "PhysicalResourceId": "Migrations",
        "StackId": events[0]["StackId"],
        "RequestId": events[0]["RequestId"],
        "LogicalResourceId": "Migrations",
        "NoEcho": False,
        "Data": {"Revision": test_head[0]},
    }
    assert "Migrated from an empty database" in create["body"]["Reason"]
    assert "Already at" in update["body"]["Reason"]
    assert update["body"]["PhysicalResourceId"] == "tracker-migrations"
    assert delete["body"]["Status"] == "SUCCESS"
    assert delete["body"]["Data"] == {}
    assert tables
    assert tables > 5


def test_a_failed_migration_answers_failed_with_the_reason(receiver: ResponseReceiver) -> None:
    unreachable = {"DATABASE_URL": "postgresql://tracker@127.0.0.1:1/tracker"}
    [answer] = invoke_in_production(
        [custom_resource_event("Create", receiver.url("Create"))], unreachable
    )
    assert answer["Status"] == "FAILED"
    [response] = receiver.received
    body = response["body"]
    assert body["Status"] == "FAILED"
    assert "OperationalError" in body["Reason"]
    assert "log stream" in body["Reason"]
    assert len(json.dumps(body)) < 4096


def test_a_database_ahead_of_the_image_is_left_as_it_is(receiver: ResponseReceiver) -> None:
    with scratch_database(config.database.url) as url:
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE alembic_version (version_num varchar(32))"))
            connection.execute(text("INSERT INTO alembic_version VALUES ('f00dfeed0001')"))
        engine.dispose()
        [answer] = invoke_in_production(
            [custom_resource_event("Update", receiver.url("Update"))], database_env(url)
        )
        assert head_revision(url) == ["f00dfeed0001"]
    assert answer["Status"] == "SUCCESS"
    assert "newer than this image" in receiver.received[0]["body"]["Reason"]


def test_an_operator_can_run_the_migrations_by_hand() -> None:
    with scratch_database(config.database.url) as url:
        [first, second] = invoke_in_production(
            [{"action": "migrate"}, {"action": "migrate"}], database_env(url)
        )
        assert head_revision(url) == [first["revision"]]
    assert first["result"].startswith("Migrated from an empty database")
    assert second["result"].startswith("Already at")
