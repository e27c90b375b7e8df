"""The database engine and session factory."""

from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
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
        if null_pool:
            pool_args = {"poolclass": NullPool}
        elif lambda_mode:
            # One request at a time per instance: one connection, checked before use because
            # a frozen instance may wake up after the server dropped it.
            pool_args = {"pool_size": 1, "max_overflow": 0, "pool_pre_ping": True}
        else:
            pool_args = {
                "pool_size": pool_size,
                "max_overflow": max_overflow,
                "pool_pre_ping": True,
            }

        # hide_parameters: errors and logs never carry the values (emails, key digests, ...).
        self.engine: Engine = create_engine(
            database_url, connect_args=connect_args, hide_parameters=True, **pool_args
        )
        self.url = self.engine.url
        self.SessionLocal: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)

    def dispose(self) -> None:
        self.engine.dispose()
