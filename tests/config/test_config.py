from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.pool import NullPool, QueuePool

from config import Config, ConfigError, config
from config.config import resolve_database_url
from config.database import Database
from config.log import configure_logging
from config.settings import (
    DEVELOPMENT_SECRET_KEY,
    SETTINGS_BY_ENV,
    LocalSettings,
    ProdSettings,
    TestSettings,
)
from root import ROOT_DIR, root_path

GOOD_SECRET = "k" * 48
DATABASE_ENV_VARS = [
    "DATABASE_URL",
    "POSTGRES_HOST",
    "SECRET_KEY",
    "WEBHOOK_SECRET_KEYS",
    "AWS_LAMBDA_FUNCTION_NAME",
    "EMBEDDED_DATABASE_NAME",
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in DATABASE_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    yield
    # Setting up another Config reconfigures the process's logging; put the test one back.
    configure_logging(level=config.settings.log_level, log_format=config.settings.log_format)


def test_root_path_is_relative_to_the_project() -> None:
    assert (ROOT_DIR / "tasks.py").is_file()
    assert root_path("alembic.ini") == ROOT_DIR / "alembic.ini"


def test_each_environment_has_its_settings_class_and_env_files() -> None:
    assert {
        "development": LocalSettings,
        "test": TestSettings,
        "production": ProdSettings,
    } == SETTINGS_BY_ENV
    assert LocalSettings.model_config["env_file"] == root_path(".env.local")
    assert TestSettings.model_config["env_file"] == root_path(".env.test")
    assert ProdSettings.model_config["env_file"] == (root_path(".env"), root_path(".env.prod"))


def test_env_files_are_read_later_ones_win_and_the_environment_wins_over_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / ".env", tmp_path / ".env.prod"
    first.write_text(
        f"SECRET_KEY={'a' * 40}\nWEBHOOK_SECRET_KEYS={'w' * 40}\nPOSTGRES_HOST=db.internal\n"
        "POSTGRES_DB=first\n"
    )
    second.write_text(f"SECRET_KEY={'b' * 40}\n")
    settings = ProdSettings(_env_file=(first, second))
    assert settings.secret_key is not None
    assert settings.secret_key.get_secret_value() == "b" * 40
    assert settings.postgres_host == "db.internal"

    monkeypatch.setenv("SECRET_KEY", "c" * 40)
    settings = ProdSettings(_env_file=(first, second))
    assert settings.secret_key is not None
    assert settings.secret_key.get_secret_value() == "c" * 40


def test_setup_picks_the_class_from_the_argument_or_app_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://user@db.example/tracker")
    fresh = Config()
    fresh.setup("test")
    assert isinstance(fresh.settings, TestSettings)

    monkeypatch.setenv("APP_ENV", "development")
    fresh = Config()
    fresh.setup()
    assert isinstance(fresh.settings, LocalSettings)


def test_setup_is_safe_to_call_again() -> None:
    database = config.database
    config.setup("test")
    config.setup()
    assert config.database is database


def test_an_unknown_app_env_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="development, test, production") as raised:
        Config().setup("staging")
    assert "'staging'" in str(raised.value)


@pytest.mark.parametrize(
    ("environment", "problem"),
    [
        ({"DATABASE_URL": "postgresql://u@db/x"}, "SECRET_KEY is not set"),
        ({"DATABASE_URL": "postgresql://u@db/x", "SECRET_KEY": "change-me"}, "placeholder"),
        (
            {"DATABASE_URL": "postgresql://u@db/x", "SECRET_KEY": DEVELOPMENT_SECRET_KEY},
            "placeholder",
        ),
        ({"DATABASE_URL": "postgresql://u@db/x", "SECRET_KEY": "short"}, "placeholder"),
        ({"SECRET_KEY": GOOD_SECRET}, "no database is configured"),
        ({"DATABASE_URL": "postgresql://u@db/x"}, "WEBHOOK_SECRET_KEYS is not set"),
        ({"WEBHOOK_SECRET_KEYS": "short"}, "each key is at least 32 characters"),
        ({"WEBHOOK_SECRET_KEYS": f"{GOOD_SECRET},short"}, "each key is at least 32 characters"),
    ],
)
def test_production_refuses_to_start_without_a_real_secret_and_a_database(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], problem: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=problem):
        Config().setup("production")


def test_production_starts_with_a_real_secret_and_a_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SECRET_KEY", GOOD_SECRET)
    monkeypatch.setenv("WEBHOOK_SECRET_KEYS", f"{'n' * 40}, {'o' * 40}")
    monkeypatch.setenv("POSTGRES_HOST", "db.example")
    monkeypatch.setenv("POSTGRES_PASSWORD", "p@ss word")
    production = Config()
    production.setup("production")
    url = production.database.url
    assert (url.drivername, url.host, url.password) == (
        "postgresql+psycopg2",
        "db.example",
        "p@ss word",
    )
    assert "p@ss word" not in production.database_description
    assert production.settings.log_format == "json"
    keys = production.settings.webhook_secret_keys
    assert [key.get_secret_value() for key in keys] == ["n" * 40, "o" * 40]
    assert production.settings.webhook_allowed_ports == [443]


def test_database_url_wins_over_postgres_fields_and_is_normalised() -> None:
    settings = TestSettings(
        database_url=SecretStr("postgres://app:secret@db.example:6543/tracker"),
        postgres_host="ignored.example",
    )
    url = settings.configured_database_url()
    assert url is not None
    assert (url.drivername, url.host, url.port, url.database) == (
        "postgresql+psycopg2",
        "db.example",
        6543,
        "tracker",
    )


def test_the_embedded_database_is_used_when_nothing_is_configured() -> None:
    url, origin = resolve_database_url(TestSettings(_env_file=None))
    assert origin == "embedded"
    assert url.database == "tracker_test"
    assert url.query["host"] == str(root_path(".data/postgres"))
    development = LocalSettings(_env_file=None)
    assert development.embedded_database_name == "tracker_dev"


def test_a_configured_database_wins_and_the_embedded_server_is_not_started(
    tmp_path: Path,
) -> None:
    unused = tmp_path / "embedded"
    settings = TestSettings(
        database_url=SecretStr("postgresql://user@db.example/other"), embedded_data_dir=unused
    )
    url, origin = resolve_database_url(settings)
    assert (origin, url.host, url.database) == ("configured", "db.example", "other")
    assert not unused.exists()


def test_production_never_falls_back_to_the_embedded_database() -> None:
    settings = TestSettings(embedded_database=False)
    with pytest.raises(ConfigError, match="No database configured"):
        resolve_database_url(settings)


def test_lambda_mode_is_detected_from_the_lambda_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not TestSettings().is_lambda
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "tracker-api")
    assert TestSettings().is_lambda
    assert not TestSettings(lambda_mode=False).is_lambda


def test_lambda_mode_keeps_one_connection_per_instance() -> None:
    database = Database(config.database.url, lambda_mode=True)
    try:
        pool = database.engine.pool
        assert isinstance(pool, QueuePool)
        assert (pool.size(), pool._max_overflow, database.engine.pool._pre_ping) == (1, 0, True)
    finally:
        database.dispose()


def test_null_pool_keeps_no_connection() -> None:
    database = Database(config.database.url, lambda_mode=True, null_pool=True)
    try:
        assert isinstance(database.engine.pool, NullPool)
        with database.engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
        assert database.engine.pool.status().startswith("NullPool")
    finally:
        database.dispose()


def test_every_connection_has_the_statement_timeout_utc_and_no_jit() -> None:
    database = Database(config.database.url, statement_timeout_ms=1234)
    try:
        with database.engine.connect() as connection:
            assert connection.execute(text("SHOW statement_timeout")).scalar() == "1234ms"
            assert connection.execute(text("SHOW timezone")).scalar() == "UTC"
            assert connection.execute(text("SHOW jit")).scalar() == "off"
    finally:
        database.dispose()


def test_the_test_database_is_not_the_development_database() -> None:
    assert config.database.url.database != LocalSettings().embedded_database_name


@pytest.mark.parametrize(("value", "days"), [(None, None), ("", None), ("  ", None), ("30", 30)])
def test_event_retention_keeps_everything_unless_set_to_a_number_of_days(
    monkeypatch: pytest.MonkeyPatch, value: str | None, days: int | None
) -> None:
    if value is None:
        monkeypatch.delenv("EVENT_RETENTION_DAYS", raising=False)
    else:
        monkeypatch.setenv("EVENT_RETENTION_DAYS", value)
    assert TestSettings().event_retention_days == days


@pytest.mark.parametrize(
    ("settings_class", "value", "ports"),
    [
        (ProdSettings, "", [443]),
        (ProdSettings, " , ", [443]),
        (ProdSettings, "443, 8443", [443, 8443]),
        (ProdSettings, "*", None),
        (TestSettings, "", None),
        (TestSettings, "8443", [8443]),
    ],
)
def test_an_empty_allowed_ports_setting_is_the_default_and_any_port_takes_a_star(
    monkeypatch: pytest.MonkeyPatch,
    settings_class: type[TestSettings] | type[ProdSettings],
    value: str,
    ports: list[int] | None,
) -> None:
    monkeypatch.setenv("SECRET_KEY", GOOD_SECRET)
    monkeypatch.setenv("WEBHOOK_SECRET_KEYS", "n" * 40)
    monkeypatch.setenv("POSTGRES_HOST", "db.example")
    monkeypatch.setenv("WEBHOOK_ALLOWED_PORTS", value)
    assert settings_class().webhook_allowed_ports == ports


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("0", "greater than or equal to 1"),
        ("-7", "greater than or equal to 1"),
        ("thirty", "valid integer"),
        ("1.5", "valid integer"),
    ],
)
def test_an_event_retention_that_is_not_a_whole_number_of_days_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    monkeypatch.setenv("EVENT_RETENTION_DAYS", value)
    with pytest.raises(ConfigError, match=f"event_retention_days: .*{problem}"):
        Config().setup("test")
