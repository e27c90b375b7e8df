"""`config`: the one place that picks the environment's settings and sets up the database."""

import logging
import os
import secrets
from collections.abc import Callable
from functools import partial
from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import URL
from sqlalchemy.exc import ProgrammingError

from config.database import Database, Login, create_database, drop_database
from config.log import LOGGER_NAME, configure_logging
from config.settings import SETTINGS_BY_ENV, SecretSources, Settings
from config.validation import describe_validation_error

logger = logging.getLogger(f"{LOGGER_NAME}.config")

DEFAULT_APP_ENV = "development"


class ConfigError(Exception):
    """The configuration cannot work; the message says what to change."""


class Config:
    """Holds the settings and database of the environment chosen by `setup`."""

    def __init__(self) -> None:
        self.app_env: str | None = None
        self._settings: Settings | None = None
        self._database: Database | None = None
        self._own_database: URL | None = None
        self.database_description = ""

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            raise ConfigError("config.setup() has not been called")
        return self._settings

    @property
    def database(self) -> Database:
        if self._database is None:
            raise ConfigError("config.setup() has not been called")
        return self._database

    def setup_own_database(self, app_env: str) -> None:
        """Configure `app_env` on a new database of this process's own, next to the one its
        settings name (configured or embedded), so that two test runs on one server never share
        a schema; `drop_own_database` drops it.

        Its URL becomes this process's DATABASE_URL, which the settings read: the commands and
        servers a test starts in a subprocess use it too. Where the role may not create
        databases, the settings' database is used as it is."""
        base_url, origin = resolve_database_url(self._read_settings(app_env))
        own_url = base_url.set(database=f"{base_url.database}_{secrets.token_hex(4)}")
        try:
            create_database(own_url)
        except ProgrammingError as error:  # InsufficientPrivilege: no CREATEDB
            logger.warning("using %s itself: %s", base_url.database, error.orig)
            self.setup(app_env)
            return
        os.environ["DATABASE_URL"] = own_url.render_as_string(hide_password=False)
        self.setup(app_env)
        self._own_database = own_url
        self.database_description = (
            f"{app_env} database: {own_url.render_as_string(hide_password=True)} "
            f"(this process's own, on the {origin} server)"
        )

    def drop_own_database(self) -> None:
        """Drop the database `setup_own_database` made, if it made one."""
        if self._own_database is None:
            return
        self.database.dispose()
        drop_database(self._own_database)
        self._own_database = None

    def setup(self, app_env: str | None = None) -> None:
        """Configure for `app_env` (else APP_ENV, else development).

        Calling it again is a no-op for the same environment, or with no argument once configured
        (as Alembic's env.py does), and a clean switch for another environment.
        """
        if app_env is None and self.app_env is not None:
            return
        app_env = app_env or os.environ.get("APP_ENV") or DEFAULT_APP_ENV
        if app_env == self.app_env:
            return
        settings = self._read_settings(app_env)
        configure_logging(level=settings.log_level, log_format=settings.log_format)
        url, origin = resolve_database_url(settings)
        database = Database(
            url,
            lambda_mode=settings.is_lambda,
            null_pool=settings.db_null_pool,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            ping_after_idle_s=settings.db_ping_after_idle_seconds,
            statement_timeout_ms=settings.db_statement_timeout_ms or None,
            connect_timeout_s=settings.db_connect_timeout_s,
            connection_options=settings.db_connection_options,
            read_login=_database_login_reader(settings),
        )
        if self._database is not None:
            self._database.dispose()
        self.app_env, self._settings, self._database = app_env, settings, database
        self.database_description = (
            f"{app_env} database: {url.render_as_string(hide_password=True)} ({origin})"
        )
        logger.info(self.database_description)

    @staticmethod
    def _read_settings(app_env: str) -> Settings:
        settings_class = SETTINGS_BY_ENV.get(app_env)
        if settings_class is None:
            valid = ", ".join(SETTINGS_BY_ENV)
            raise ConfigError(f"Unknown APP_ENV {app_env!r}: expected one of {valid}")
        try:
            sources = SecretSources(_env_file=settings_class.model_config.get("env_file"))
            return settings_class(**_secret_settings(sources))
        except ValidationError as error:
            problems = describe_validation_error(error, subject="settings")
            raise ConfigError(f"Invalid {app_env} settings: {problems}") from None


def _secret_settings(sources: SecretSources) -> dict[str, Any]:
    secret_ids = (
        sources.secret_key_secret_id,
        sources.database_secret_id,
        sources.webhook_secret_keys_secret_id,
    )
    if all(secret_id is None for secret_id in secret_ids):
        return {}
    # Only then: the module is for AWS, and costs nothing where no secret is configured.
    from config.secrets import SecretsError, fetch_secret_settings

    try:
        return fetch_secret_settings(sources)
    except SecretsError as error:
        raise ConfigError(str(error)) from None


def _database_login_reader(settings: Settings) -> Callable[[], Login] | None:
    """Where to read the database login again once RDS rotated its password: the secret it
    came from, when the POSTGRES_* fields name the database."""
    if settings.database_secret_id is None or settings.database_url is not None:
        return None
    from config.secrets import read_database_login

    return partial(read_database_login, settings)


def resolve_database_url(settings: Settings) -> tuple[URL, str]:
    """The configured database if there is one, else the embedded server where allowed."""
    configured = settings.configured_database_url()
    if configured is not None:
        return configured, "configured"
    if not settings.embedded_database:
        raise ConfigError("No database configured: set DATABASE_URL or POSTGRES_HOST")
    from config.embedded import embedded_database_url

    url = embedded_database_url(settings.embedded_data_dir, settings.embedded_database_name)
    return url, "embedded"


config = Config()
