"""Each test run works in a database of its own, which its subprocesses use too."""

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from config import Config, config
from config.log import configure_logging
from config.settings import TestSettings


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    yield
    # Setting up another Config reconfigures the process's logging; put the test one back.
    configure_logging(level=config.settings.log_level, log_format=config.settings.log_format)


def database_exists(url: URL) -> bool:
    engine = create_engine(url.set(database="postgres"))
    try:
        with engine.connect() as connection:
            found = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            )
            return found.scalar() is not None
    finally:
        engine.dispose()


def test_the_settings_name_this_runs_own_database() -> None:
    # What a subprocess with the test settings (a task, a uvicorn server) would connect to.
    assert TestSettings().configured_database_url() == config.database.url
    assert "this process's own" in config.database_description


def test_an_own_database_is_made_next_to_the_configured_one_and_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", config.database.url.render_as_string(hide_password=False))
    other = Config()
    other.setup_own_database("test")
    try:
        url = other.database.url
        assert str(url.database).startswith(f"{config.database.url.database}_")
        assert TestSettings().configured_database_url() == url
        with other.database.engine.connect() as connection:
            assert connection.execute(text("SELECT current_database()")).scalar() == url.database
    finally:
        other.drop_own_database()
    assert not database_exists(url)
    other.drop_own_database()  # a second call has nothing left to drop
