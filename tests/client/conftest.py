import asyncio
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


@pytest.fixture(autouse=True)
def fresh_event_loop_policy() -> Iterator[None]:
    """asyncio.run leaves the main thread marked as having set its loop (to none), after which
    asyncio.get_event_loop() refuses to make one: code that relies on it (Mangum, in the
    entry point's tests) would fail in any later test. A fresh policy forgets it."""
    yield
    asyncio.set_event_loop_policy(None)
