from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.support import Account, ApiServer, create_account, serving


@pytest.fixture(scope="session")
def api_server(migrated_database: None) -> Iterator[ApiServer]:
    """The app served by uvicorn on a free port, against this run's test database."""
    with serving() as server:
        yield server


@pytest.fixture
def account(committed: None) -> Account:
    return create_account()


@pytest.fixture
def spool_file(tmp_path: Path) -> Path:
    return tmp_path / "spool.sqlite3"
