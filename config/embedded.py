"""An embedded PostgreSQL server (the `pgserver` wheel) for development and tests.

It starts once, keeps running between processes (so a second `run-dev.sh` or test run is quick)
and keeps its data under `.data/`. Production never imports this module.
"""

import contextlib
import warnings
from pathlib import Path

from sqlalchemy.engine import URL, make_url


def embedded_database_url(data_dir: Path, database: str) -> URL:
    """Start (or reuse) the embedded server and return the URL of `database`, created if missing."""
    import psycopg2
    from psycopg2 import errors

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, as on CI machines and containers.
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

        data_dir.mkdir(parents=True, exist_ok=True)
        server = get_server(data_dir, cleanup_mode=None)

    maintenance = psycopg2.connect(server.get_uri("postgres"))
    try:
        maintenance.autocommit = True
        with maintenance.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cursor.fetchone() is None:
                # Another process may create it first.
                with contextlib.suppress(errors.DuplicateDatabase):
                    cursor.execute(f'CREATE DATABASE "{database}"')
    finally:
        maintenance.close()

    return make_url(server.get_uri(database)).set(drivername="postgresql+psycopg2")
