"""The login-throttle migration keeps the previous release working: between the migration and the
functions' update (and after a rollback), that release still reads and writes the counters it
kept on users. Its statements are run here as it sent them."""

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from config import config
from config.database import scratch_database
from tests.helpers.processes import database_env, run_python

BEFORE_THE_THROTTLE_TABLE = "b7d41e09a2c3"

# What the previous release's login did with a user, written out as SQL: load it with its
# counters, count a failure (a new window once the old one is over), reset them on a success.
LOAD_USER = text(
    "SELECT id, email, password_hash, is_active, failed_login_count,"
    " failed_login_window_started_at FROM users WHERE email = :email"
)
COUNT_FAILURE = text(
    "UPDATE users SET"
    " failed_login_count = CASE WHEN failed_login_window_started_at IS NULL"
    "  OR failed_login_window_started_at <= now() - interval '15 minutes'"
    "  THEN 1 ELSE failed_login_count + 1 END,"
    " failed_login_window_started_at = CASE WHEN failed_login_window_started_at IS NULL"
    "  OR failed_login_window_started_at <= now() - interval '15 minutes'"
    "  THEN now() ELSE failed_login_window_started_at END"
    " WHERE id = :id"
)
RESET_COUNTERS = text(
    "UPDATE users SET failed_login_count = 0, failed_login_window_started_at = NULL WHERE id = :id"
)
# Its signup wrote every mapped column, the counters included.
INSERT_USER = text(
    "INSERT INTO users (email, first_name, last_name, password_hash, role, is_active,"
    " failed_login_count, failed_login_window_started_at)"
    " VALUES (:email, 'Ada', 'Admin', 'not-a-hash', 'admin', true, 0, NULL) RETURNING id"
)


def migrate(url: URL, revision: str, *, down: bool = False) -> None:
    result = run_python(
        "-m", "alembic", "downgrade" if down else "upgrade", revision, env=database_env(url)
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
def scratch() -> Iterator[tuple[URL, Engine]]:
    with scratch_database(config.database.url) as url:
        engine = create_engine(url)
        try:
            yield url, engine
        finally:
            engine.dispose()


def failures_of(engine: Engine, email: str) -> int:
    with engine.connect() as connection:
        row = connection.execute(LOAD_USER, {"email": email}).one()
    return int(row.failed_login_count)


def test_the_previous_release_logs_in_against_the_new_schema(
    scratch: tuple[URL, Engine],
) -> None:
    url, engine = scratch
    migrate(url, BEFORE_THE_THROTTLE_TABLE)
    with engine.begin() as connection:
        user_id = connection.execute(INSERT_USER, {"email": "before@example.com"}).scalar_one()
        connection.execute(COUNT_FAILURE, {"id": user_id})

    migrate(url, "head")
    with engine.begin() as connection:
        # A user the previous release signs up after the migration ran, and its failed logins.
        new_id = connection.execute(INSERT_USER, {"email": "after@example.com"}).scalar_one()
        for counted in (user_id, user_id, new_id):
            connection.execute(COUNT_FAILURE, {"id": counted})
    assert failures_of(engine, "before@example.com") == 3
    assert failures_of(engine, "after@example.com") == 1

    with engine.begin() as connection:
        connection.execute(RESET_COUNTERS, {"id": user_id})
    assert failures_of(engine, "before@example.com") == 0


def test_a_user_the_new_release_creates_has_the_counters_the_previous_one_reads(
    scratch: tuple[URL, Engine],
) -> None:
    url, engine = scratch
    migrate(url, "head")
    with engine.begin() as connection:
        # The new release's insert names none of the deprecated columns.
        connection.execute(
            text(
                "INSERT INTO users (email, first_name, last_name, password_hash, role)"
                " VALUES ('new@example.com', 'Ada', 'Admin', 'not-a-hash', 'admin')"
            )
        )
    assert failures_of(engine, "new@example.com") == 0


def test_the_downgrade_keeps_the_counters_and_drops_only_the_new_table(
    scratch: tuple[URL, Engine],
) -> None:
    url, engine = scratch
    migrate(url, BEFORE_THE_THROTTLE_TABLE)
    with engine.begin() as connection:
        user_id = connection.execute(INSERT_USER, {"email": "kept@example.com"}).scalar_one()
    migrate(url, "head")
    with engine.begin() as connection:
        connection.execute(COUNT_FAILURE, {"id": user_id})
    migrate(url, BEFORE_THE_THROTTLE_TABLE, down=True)
    assert failures_of(engine, "kept@example.com") == 1
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT to_regclass('login_failures')")) is None
