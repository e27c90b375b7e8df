"""The database engine and session factory."""

import time
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool


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
    ) -> None:
        """`connection_options=False` sends none of the session settings with the connection
        (RDS Proxy refuses connections that carry any): the database's defaults apply, which
        `database_defaults_sql` sets."""
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
