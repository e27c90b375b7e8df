"""The database engine and session factory, and creating and dropping whole databases."""

import logging
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from config.log import LOGGER_NAME

logger = logging.getLogger(f"{LOGGER_NAME}.database")


def session_settings(statement_timeout_ms: int | None) -> dict[str, str]:
    """The settings every session of the app runs with."""
    # Timestamps come back in UTC whatever the server's default time zone. No JIT: compiling
    # an analytics query took longer than running it (0.5 s of 2 s on a year of data).
    settings = {"timezone": "UTC", "jit": "off"}
    if statement_timeout_ms is not None:  # else the server's (or the role's) setting
        settings["statement_timeout"] = str(statement_timeout_ms)
    return settings


def database_defaults_sql(database: str, statement_timeout_ms: int | None) -> list[str]:
    """ALTER DATABASE statements that make `session_settings` the database's defaults, for
    connections that cannot carry them (behind RDS Proxy)."""
    quoted = '"' + database.replace('"', '""') + '"'
    return [
        f"ALTER DATABASE {quoted} SET {name} = '{value}'"
        for name, value in session_settings(statement_timeout_ms).items()
    ]


Login = tuple[str, str]
"""A database user name and its password."""


def is_authentication_failure(error: Exception) -> bool:
    """Whether a failed connection attempt was refused for its credentials (libpq reports the
    server's message, with no SQLSTATE)."""
    return "authentication failed" in str(error).lower()


class RotatingLogin:
    """The credentials new connections use, read again from where they are kept (the database
    secret, which RDS rotates) when the server refuses the ones in hand."""

    def __init__(self, read_login: Callable[[], Login]) -> None:
        self.read_login = read_login
        self.current: Login | None = None

    def install(self, engine: Engine) -> None:
        event.listen(engine, "do_connect", self.connect)

    def connect(
        self, dialect: Any, connection_record: Any, cargs: list[Any], cparams: dict[str, Any]
    ) -> Any:
        if self.current is not None:
            cparams["user"], cparams["password"] = self.current
        try:
            return dialect.connect(*cargs, **cparams)
        except dialect.loaded_dbapi.OperationalError as error:
            if not is_authentication_failure(error):
                raise
            try:
                fresh = self.read_login()
            except Exception:
                logger.exception("Cannot read the database login again after a refusal")
                raise error from None
            if fresh == (cparams.get("user"), cparams.get("password")):
                raise  # the secret holds what was refused: no rotation to catch up with
            cparams["user"], cparams["password"] = fresh
            connection = dialect.connect(*cargs, **cparams)
            self.current = fresh
            logger.info("Connected with the database login read again (its password rotated)")
            return connection


class Database:
    """An engine and its `SessionLocal` factory for one database URL."""

    def __init__(
        self,
        database_url: str | URL,
        *,
        lambda_mode: bool = False,
        null_pool: bool = False,
        pool_size: int = 5,
        max_overflow: int = 10,
        statement_timeout_ms: int | None = None,
        connect_timeout_s: int | None = None,
        connection_options: bool = True,
        ping_after_idle_s: float = 0,
        read_login: Callable[[], Login] | None = None,
    ) -> None:
        """`connection_options=False` sends none of the session settings with the connection
        (RDS Proxy refuses connections that carry any): the database's defaults apply, which
        `database_defaults_sql` sets. `read_login` reads the current user and password again
        when the server refuses the URL's (after a rotation of the password)."""
        connect_args: dict[str, Any] = {"application_name": "tracker"}
        if connect_timeout_s:
            connect_args["connect_timeout"] = connect_timeout_s
        if connection_options:
            connect_args["options"] = " ".join(
                f"-c {name}={value}"
                for name, value in session_settings(statement_timeout_ms).items()
            )

        pool_args: dict[str, Any]
        # Pooled connections are checked before use, because the server may have dropped them
        # (a restart, or a frozen Lambda instance waking up): always, or only those idle for
        # longer than `ping_after_idle_s` (see `_ping_after_idle`).
        pre_ping = not ping_after_idle_s
        if null_pool:
            pool_args = {"poolclass": NullPool}
        elif lambda_mode:
            # One request at a time per instance: one connection.
            pool_args = {"pool_size": 1, "max_overflow": 0, "pool_pre_ping": pre_ping}
        else:
            pool_args = {
                "pool_size": pool_size,
                "max_overflow": max_overflow,
                "pool_pre_ping": pre_ping,
            }

        # hide_parameters: errors and logs never carry the values (emails, key digests, ...).
        self.engine: Engine = create_engine(
            database_url, connect_args=connect_args, hide_parameters=True, **pool_args
        )
        if not null_pool and not pre_ping:
            _ping_after_idle(self.engine, ping_after_idle_s)
        if read_login is not None:
            RotatingLogin(read_login).install(self.engine)
        self.url = self.engine.url
        self.SessionLocal: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)

    def dispose(self) -> None:
        self.engine.dispose()


def _ping_after_idle(engine: Engine, idle_s: float) -> None:
    """Ping a pooled connection before use only when it has been idle for more than `idle_s`.

    A connection the server dropped while it was in use more recently fails the request that
    finds it (503, to be retried) and the pool replaces it and every connection as old.
    """

    @event.listens_for(engine, "checkin")
    def note_idle_since(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.time()  # wall time: it counts a frozen instance's sleep

    @event.listens_for(engine, "checkout")
    def ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.time() - idle_since <= idle_s:
            return  # new, or in use a moment ago
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except engine.dialect.loaded_dbapi.Error as error:
            # The pool discards this connection and checks out another (or connects anew).
            raise DisconnectionError("the pooled connection was dropped") from error


def _on_maintenance_database(url: URL, statement: Callable[[str], str]) -> None:
    """Run `statement(the quoted name of the database url names)` on the `postgres` database of
    the same server: a database is created, dropped or altered from outside itself (where no
    setting of its own, such as a statement timeout, applies)."""
    maintenance = create_engine(
        url.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    try:
        name = maintenance.dialect.identifier_preparer.quote_identifier(str(url.database))
        with maintenance.connect() as connection:
            connection.execute(text(statement(name)))
    finally:
        maintenance.dispose()


def create_database(url: URL) -> None:
    """Create the (empty) database `url` names, on its server."""
    _on_maintenance_database(url, lambda name: f"CREATE DATABASE {name}")


def drop_database(url: URL) -> None:
    """Drop the database `url` names, if it exists, cutting off any session still on it."""
    _on_maintenance_database(url, lambda name: f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def alter_database(url: URL, change: str) -> None:
    """`ALTER DATABASE <the database url names> <change>`, e.g. `SET statement_timeout = 1`."""
    _on_maintenance_database(url, lambda name: f"ALTER DATABASE {name} {change}")


@contextmanager
def scratch_database(server: URL, prefix: str = "tracker_scratch") -> Iterator[URL]:
    """A new, empty database on `server`'s server, named `prefix` and a random suffix; dropped
    afterwards."""
    url = server.set(database=f"{prefix}_{secrets.token_hex(6)}")
    create_database(url)
    try:
        yield url
    finally:
        drop_database(url)
