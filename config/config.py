"""`config`: the one place that picks the environment's settings and sets up the database."""

import logging
import os
from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import URL

from config.database import Database
from config.log import LOGGER_NAME, configure_logging
from config.settings import SETTINGS_BY_ENV, SecretSources, Settings

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
        settings_class = SETTINGS_BY_ENV.get(app_env)
        if settings_class is None:
            valid = ", ".join(SETTINGS_BY_ENV)
            raise ConfigError(f"Unknown APP_ENV {app_env!r}: expected one of {valid}")
        try:
            sources = SecretSources(_env_file=settings_class.model_config.get("env_file"))
            settings = settings_class(**_secret_settings(sources))
        except ValidationError as error:
            raise ConfigError(_describe_settings_error(app_env, error)) from None

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
        )
        if self._database is not None:
            self._database.dispose()
        self.app_env, self._settings, self._database = app_env, settings, database
        self.database_description = (
            f"{app_env} database: {url.render_as_string(hide_password=True)} ({origin})"
        )
        logger.info(self.database_description)


def _secret_settings(sources: SecretSources) -> dict[str, Any]:
    if sources.secret_key_secret_id is None and sources.database_secret_id is None:
        return {}
    # Only then: the module is for AWS, and costs nothing where no secret is configured.
    from config.secrets import SecretsError, fetch_secret_settings

    try:
        return fetch_secret_settings(sources)
    except SecretsError as error:
        raise ConfigError(str(error)) from None


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


def _describe_settings_error(app_env: str, error: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'settings'}: {item['msg']}"
        for item in error.errors()
    )
    return f"Invalid {app_env} settings: {problems}"


config = Config()
