"""Pooled connections are pinged before use only after an idle spell (DB_PING_AFTER_IDLE_SECONDS,
0: before every use). A connection the server dropped while the pool held it idle is replaced
without the caller noticing; one used a moment ago is trusted, and if the server dropped it, it
fails that one use and the next gets a fresh connection."""

import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from config import config
from config.database import Database


@pytest.fixture
def one_connection_pool() -> Iterator[Callable[[float], Database]]:
    """Makes an engine of one pooled connection with this ping setting."""
    made: list[Database] = []

    def make(ping_after_idle_s: float) -> Database:
        database = Database(
            config.database.url, pool_size=1, max_overflow=0, ping_after_idle_s=ping_after_idle_s
        )
        made.append(database)
        return database

    yield make
    for database in made:
        database.dispose()


def backend_pid(database: Database) -> int:
    with database.engine.connect() as connection:
        pid = connection.scalar(text("SELECT pg_backend_pid()"))
    assert isinstance(pid, int)
    return pid


def terminate(pid: int) -> None:
    """End that session from the server's side, as a restart or an idle timeout would."""
    with config.database.engine.connect() as connection:
        ended = connection.scalar(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
    assert ended


@pytest.mark.parametrize("idle_s", [0, 0.01], ids=["ping always", "ping after idle"])
def test_a_connection_dropped_while_idle_is_replaced_without_an_error(
    one_connection_pool: Callable[[float], Database], idle_s: float
) -> None:
    database = one_connection_pool(idle_s)
    pid = backend_pid(database)
    terminate(pid)
    time.sleep(0.05)  # idle for longer than the setting
    assert backend_pid(database) != pid


def test_a_connection_used_a_moment_ago_is_not_pinged(
    one_connection_pool: Callable[[float], Database],
) -> None:
    database = one_connection_pool(3600)
    pid = backend_pid(database)
    terminate(pid)
    # No ping: this use meets the dropped connection (the app answers it 503)...
    with pytest.raises(OperationalError):
        backend_pid(database)
    # ...and the pool has replaced it for the next one.
    assert backend_pid(database) != pid
