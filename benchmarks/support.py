"""What the benchmarks share: a scratch database on a local PostgreSQL server, migrated."""

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg2
from sqlalchemy.engine import URL, make_url

from config import database as databases
from root import ROOT_DIR, root_path

DEFAULT_MAINTENANCE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCALHOST = "127.0.0.1"


def is_local(url: URL) -> bool:
    """Whether every host the URL names is 127.0.0.1 or a Unix socket directory."""
    socket_dirs = url.query.get("host")
    hosts = [url.host, *((socket_dirs,) if isinstance(socket_dirs, str) else socket_dirs or ())]
    named = [host for host in hosts if host]
    return bool(named) and all(host == LOCALHOST or host.startswith("/") for host in named)


def connect_params(url: URL) -> dict[str, Any]:
    """psycopg2.connect() arguments for a SQLAlchemy URL (Unix sockets come as ?host=/dir)."""
    params: dict[str, Any] = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
        **url.query,
    }
    return {
        **{key: value for key, value in params.items() if value},
        "application_name": "tracker-bench",
        "connect_timeout": 5,
    }


@contextlib.contextmanager
def connection(url: URL, *, autocommit: bool = False) -> Iterator[Any]:
    conn = psycopg2.connect(**connect_params(url))
    try:
        conn.autocommit = autocommit
        yield conn
    finally:
        conn.close()


def maintenance_url(given: str | None) -> URL:
    """The given server, else the machine's PostgreSQL, else the embedded one."""
    url = make_url(given or DEFAULT_MAINTENANCE_URL)
    if given is not None:
        return url
    try:
        with connection(url, autocommit=True):
            return url
    except psycopg2.OperationalError as error:
        reason = str(error).strip().splitlines()[0]
        print(f"{DEFAULT_MAINTENANCE_URL} is unreachable ({reason}); using the embedded server")
    from config.embedded import embedded_database_url

    return embedded_database_url(root_path(".data/postgres"), "postgres")


def describe_server(url: URL) -> str:
    with connection(url, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = str(cursor.fetchone()[0])
    where = f"{url.host}:{url.port or 5432}" if url.host else f"socket {url.query.get('host')}"
    return f"PostgreSQL {version} at {where}"


def app_env(url: URL) -> dict[str, str]:
    return {
        **os.environ,
        "APP_ENV": "development",
        "DATABASE_URL": url.render_as_string(hide_password=False),
    }


def migrate(url: URL) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT_DIR,
        env=app_env(url),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"alembic upgrade head failed:\n{result.stdout}{result.stderr}")


@contextlib.contextmanager
def scratch_database(maintenance: URL) -> Iterator[URL]:
    """A new empty database on the maintenance connection's server, dropped afterwards."""
    with databases.scratch_database(maintenance, prefix="tracker_bench") as url:
        try:
            yield url
        finally:
            print(f"dropping scratch database {url.database}")
