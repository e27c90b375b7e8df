"""Test fixtures: the migrated test database, a rolled-back session per test, and the app."""

from collections.abc import Iterator

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from config import config
from root import root_path

# A database of this run's own, so that two runs at once (a second checkout, CI) never meet.
config.setup_own_database("test")

from app.dependencies import unit_of_work  # noqa: E402  (needs the configured app)
from app.main import app  # noqa: E402
from app.models import Base  # noqa: E402
from tests.helpers.app import sessions_from  # noqa: E402


def pytest_report_header() -> str:
    return config.database_description


def pytest_unconfigure() -> None:
    config.drop_own_database()


@pytest.fixture(scope="session", autouse=True)
def migrated_database() -> None:
    """Start every run from an empty schema migrated to head, as a deployment would (the schema
    is new, unless the role could not create the run's own database)."""
    with config.database.engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    command.upgrade(AlembicConfig(str(root_path("alembic.ini"))), "head")


@pytest.fixture
def db() -> Iterator[Session]:
    """A session whose work, commits included, is rolled back after the test."""
    connection = config.database.engine.connect()
    transaction = connection.begin()
    session = Session(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    try:
        yield session
    finally:
        session.close()
        transaction.rollback()
        connection.close()


@pytest.fixture
def api(db: Session) -> Iterator[None]:
    """Route the app's requests through the test's session."""

    def get_test_db() -> Iterator[Session]:
        # What the test made before the request is there for good, as data a real request finds
        # is (a refused request must not roll it back); only the outer transaction is undone.
        db.commit()
        # And the request starts from what the database holds, as the app's fresh session per
        # request does: otherwise objects the test keeps would hide earlier bulk UPDATEs.
        db.expire_all()
        yield from unit_of_work(db)

    with sessions_from(get_test_db):
        yield


@pytest.fixture
def client(api: None) -> Iterator[TestClient]:
    # https, so that Secure cookies are sent back as a browser would.
    with TestClient(app, base_url="https://testserver") as test_client:
        yield test_client


@pytest.fixture
def committed() -> Iterator[None]:
    """For tests that commit for real (several connections): empty every table afterwards."""
    yield
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with config.database.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-examples",
        type=int,
        default=25,
        help="examples schemathesis generates per operation in tests/api/test_fuzz.py (default 25)",
    )
