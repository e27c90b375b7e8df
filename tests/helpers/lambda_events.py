"""Helpers for tests that go beyond one rolled-back session: scratch databases, a throwaway
server, subprocesses, and AWS Lambda events as API Gateway sends them."""

import base64
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mangum.types import LambdaCognitoIdentity, LambdaMobileClientContext
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, make_url

from config import config
from root import ROOT_DIR


@contextmanager
def scratch_database() -> Iterator[URL]:
    """A new, empty database on the test server, dropped afterwards."""
    name = f"tracker_scratch_{uuid.uuid4().hex[:12]}"
    maintenance = create_engine(
        config.database.url.set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    try:
        with maintenance.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield config.database.url.set(database=name)
    finally:
        with maintenance.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        maintenance.dispose()


# A Unix socket's path must fit in about 100 bytes (108 on Linux, 104 on macOS).
_SOCKET_PATH_LIMIT = 100


class ThrowawayServer:
    """A PostgreSQL server of a test's own (the `pgserver` wheel), for tests that stop and start
    it: the embedded test server is shared by every test and must stay up."""

    def __init__(self, data_dir: Path) -> None:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset, as in config.embedded.
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server

            self._server = get_server(data_dir, cleanup_mode="delete")

    def url(self, database: str) -> URL:
        return make_url(self._server.get_uri(database)).set(drivername="postgresql+psycopg2")

    def create_database(self, name: str) -> URL:
        maintenance = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with maintenance.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            maintenance.dispose()
        return self.url(name)

    def stop(self) -> None:
        """A fast shutdown, as a restart or a failover does: open sessions are cut off."""
        from pgserver._commands import POSTGRES_BIN_PATH

        subprocess.run(
            [POSTGRES_BIN_PATH / "pg_ctl", "-D", self._server.pgdata, "-w", "-m", "fast", "stop"],
            # pg_ctl refuses to run as root; pgserver runs the server as its own user then.
            user=self._server.system_user,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        """Start it again the way pgserver first did (same data, socket and URL), if stopped."""
        with self._server._lock:
            self._server.ensure_postgres_running()

    def remove(self) -> None:
        """Stop it if it runs and delete its data."""
        self._server.cleanup()


@contextmanager
def throwaway_server(base_dir: Path) -> Iterator[ThrowawayServer]:
    """A throwaway server with its data (and socket) under `base_dir`, or under a short temporary
    directory when the socket's path would be too long there; removed afterwards."""
    short_dir: Path | None = None
    data_dir = base_dir / "pg"
    if len(str(data_dir / ".s.PGSQL.5432")) > _SOCKET_PATH_LIMIT:
        short_dir = Path(tempfile.mkdtemp(prefix="trk"))
        data_dir = short_dir / "pg"
    server: ThrowawayServer | None = None
    try:
        server = ThrowawayServer(data_dir)
        yield server
    finally:
        if server is not None:
            server.remove()
        if short_dir is not None:
            shutil.rmtree(short_dir, ignore_errors=True)


def run_python(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `python ARGS` in the project root with the test environment plus `env`."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT_DIR,
        env={**os.environ, "APP_ENV": "test", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def database_env(url: URL) -> dict[str, str]:
    return {"DATABASE_URL": url.render_as_string(hide_password=False)}


@dataclass
class LambdaContext:
    """The attributes of the Lambda runtime's context object that the app may read."""

    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_name: str = "tracker-api"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:tracker-api"
    log_group_name: str = "/aws/lambda/tracker-api"
    log_stream_name: str = "2026/11/26/[$LATEST]0123456789abcdef"
    identity: LambdaCognitoIdentity | None = None
    client_context: LambdaMobileClientContext | None = None

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def _encode_body(body: Any) -> tuple[str | None, dict[str, str]]:
    if body is None:
        return None, {}
    return json.dumps(body), {"content-type": "application/json"}


def rest_event(
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: Any = None,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway REST API (payload format 1.0) proxy event."""
    raw_body, body_headers = _encode_body(body)
    all_headers = {
        "Host": "abc123.execute-api.eu-west-1.amazonaws.com",
        "User-Agent": "pytest",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-For": "203.0.113.7",
        **body_headers,
        **(headers or {}),
    }
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {key: [value] for key, value in all_headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": (
            {key: [value] for key, value in query.items()} if query else None
        ),
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc123",
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "requestId": str(uuid.uuid4()),
            "accountId": "123456789012",
            "apiId": "abc123",
            "protocol": "HTTP/1.1",
            "requestTimeEpoch": 1_700_000_000_000,
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "pytest"},
        },
        "body": raw_body,
        "isBase64Encoded": False,
    }


def http_api_event(
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    cookies: list[str] | None = None,
    body: Any = None,
    query: str = "",
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event."""
    raw_body, body_headers = _encode_body(body)
    all_headers = {
        "host": "abc123.execute-api.eu-west-1.amazonaws.com",
        "user-agent": "pytest",
        "x-forwarded-proto": "https",
        "x-forwarded-for": "203.0.113.7",
        **body_headers,
        **{key.lower(): value for key, value in (headers or {}).items()},
    }
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": all_headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "pytest",
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": "26/Nov/2026:12:00:00 +0000",
            "timeEpoch": 1_700_000_000_000,
        },
        "body": raw_body,
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    return event


def response_json(response: dict[str, Any]) -> Any:
    body = response["body"]
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return json.loads(body)


def response_headers(response: dict[str, Any]) -> dict[str, list[str]]:
    """A Lambda response's headers, single- and multi-valued, by lower-case name."""
    merged: dict[str, list[str]] = {}
    for name, value in response.get("headers", {}).items():
        merged.setdefault(name.lower(), []).append(value)
    for name, values in response.get("multiValueHeaders", {}).items():
        merged.setdefault(name.lower(), []).extend(values)
    return merged


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured_records(logger_name: str) -> Iterator[list[logging.LogRecord]]:
    """The records a logger emits inside the block, whatever its configured level."""
    logger = logging.getLogger(logger_name)
    handler, level = _ListHandler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextmanager
def captured_statements() -> Iterator[list[str]]:
    """The SQL the app sends inside the block, less the tests' own savepoint handling."""
    statements: list[str] = []

    def record(*args: Any) -> None:
        statement: str = args[2]
        if not statement.startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO")):
            statements.append(statement)

    event.listen(config.database.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(config.database.engine, "before_cursor_execute", record)
