"""After RDS rotates the database password, an instance that read the old one from the secret
still connects: a connection refused for its credentials reads the login again and retries once.
Run against a server of the test's own whose role really checks its password (the test servers
trust every local connection)."""

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

from config.database import Database, Login
from tests.helpers.capture import captured_records
from tests.helpers.databases import throwaway_server

ROLE = "rotating_login"


class Secret:
    """Stands in for the RDS-managed secret: what it holds, and how often it was read."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.reads = 0

    def read(self) -> Login:
        self.reads += 1
        return ROLE, self.password


@pytest.fixture(scope="module")
def server_url() -> Iterator[URL]:
    with throwaway_server() as server:
        admin = server.url("postgres")
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(f"CREATE ROLE {ROLE} LOGIN PASSWORD 'first-password'"))
        finally:
            engine.dispose()
        server.require_password(ROLE)
        yield admin


def rotate(admin: URL, password: str) -> None:
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f"ALTER ROLE {ROLE} PASSWORD '{password}'"))
    finally:
        engine.dispose()


def database(admin: URL, password: str, secret: Secret) -> Database:
    # As on Lambda behind RDS Proxy: no pool, every request opens a connection.
    url = admin.set(username=ROLE, password=password)
    return Database(url, null_pool=True, read_login=secret.read)


def whoami(db: Database) -> str:
    with db.engine.connect() as connection:
        return str(connection.scalar(text("SELECT current_user")))


def test_the_role_really_checks_its_password(server_url: URL) -> None:
    rotate(server_url, "checked-password")
    engine = create_engine(server_url.set(username=ROLE, password="wrong-password"))
    try:
        with pytest.raises(OperationalError, match="password authentication failed"):
            engine.connect()
    finally:
        engine.dispose()


def test_after_a_rotation_the_login_is_read_again_once_and_then_kept(server_url: URL) -> None:
    rotate(server_url, "before-rotation")
    secret = Secret("before-rotation")
    db = database(server_url, "before-rotation", secret)
    try:
        assert whoami(db) == ROLE
        assert secret.reads == 0

        rotate(server_url, "after-rotation")
        secret.password = "after-rotation"
        with captured_records("tracker.database") as records:
            assert whoami(db) == ROLE
        assert secret.reads == 1
        assert any("read again" in record.getMessage() for record in records)

        # Later connections use the new password from the start.
        assert whoami(db) == ROLE
        assert whoami(db) == ROLE
        assert secret.reads == 1
    finally:
        db.dispose()


def test_a_secret_still_holding_the_refused_password_fails_after_one_read(
    server_url: URL,
) -> None:
    rotate(server_url, "the-real-one")
    secret = Secret("stale-password")
    db = database(server_url, "stale-password", secret)
    try:
        with pytest.raises(OperationalError, match="password authentication failed"):
            whoami(db)
        assert secret.reads == 1
    finally:
        db.dispose()


def test_a_failure_that_is_not_about_credentials_reads_no_secret(server_url: URL) -> None:
    rotate(server_url, "right-password")
    secret = Secret("right-password")
    url = server_url.set(username=ROLE, password="right-password", database="no_such_database")
    db = Database(url, null_pool=True, read_login=secret.read)
    try:
        with pytest.raises(OperationalError, match="does not exist"):
            whoami(db)
        assert secret.reads == 0
    finally:
        db.dispose()


def test_a_secret_that_cannot_be_read_leaves_the_refusal_as_the_error(server_url: URL) -> None:
    rotate(server_url, "rotated-away")

    def unreadable() -> Login:
        raise RuntimeError("Secrets Manager unreachable")

    db = Database(
        server_url.set(username=ROLE, password="old-password"),
        null_pool=True,
        read_login=unreadable,
    )
    try:
        with (
            captured_records("tracker.database") as records,
            pytest.raises(OperationalError, match="password authentication failed"),
        ):
            whoami(db)
        assert any("Cannot read the database login" in r.getMessage() for r in records)
    finally:
        db.dispose()
