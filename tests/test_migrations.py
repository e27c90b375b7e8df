"""Migrations on a scratch database: up, down to nothing, up again, and no drift from the models."""

import importlib.util

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL

from app.models import Base, JobStepCompletion
from config import config
from root import ROOT_DIR
from tests.support import database_env, run_python, scratch_database


def table_names(url_env: dict[str, str]) -> set[str]:
    engine = create_engine(url_env["DATABASE_URL"])
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def set_database_statement_timeout(url: URL, value: str) -> None:
    # Its own connection without the timeout: under the 1 ms set here, even the reset would be
    # cancelled on a busy machine.
    engine = create_engine(
        url, isolation_level="AUTOCOMMIT", connect_args={"options": "-c statement_timeout=0"}
    )
    try:
        with engine.connect() as connection:
            connection.execute(
                text(f'ALTER DATABASE "{url.database}" SET statement_timeout = {value}')
            )
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_and_no_drift() -> None:
    model_tables = set(Base.metadata.tables)
    with scratch_database() as url:
        env = database_env(url)

        # Neither the requests' statement timeout nor one set on the database (or the role)
        # applies to migrations: at 1 ms nothing would pass.
        set_database_statement_timeout(url, "1")
        upgraded = run_python(
            "-m", "alembic", "upgrade", "head", env={**env, "DB_STATEMENT_TIMEOUT_MS": "1"}
        )
        set_database_statement_timeout(url, "DEFAULT")
        assert upgraded.returncode == 0, upgraded.stderr
        assert table_names(env) == model_tables

        downgraded = run_python("-m", "alembic", "downgrade", "base", env=env)
        assert downgraded.returncode == 0, downgraded.stderr
        assert table_names(env) == set()

        again = run_python("-m", "alembic", "upgrade", "head", env=env)
        assert again.returncode == 0, again.stderr
        assert table_names(env) == model_tables

        check = run_python("-m", "alembic", "check", env=env)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_the_funnel_migration_buckets_times_as_the_model_does() -> None:
    path = (
        ROOT_DIR
        / "alembic/versions/2026_11_27_b7d41e09a2c3_time_step_completions_for_the_funnel.py"
    )
    spec = importlib.util.spec_from_file_location("funnel_migration", path)
    assert spec is not None
    assert spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    computed = JobStepCompletion.__table__.c.seconds_bucket.computed
    assert computed is not None
    rendered = computed.sqltext.compile(
        dialect=config.database.engine.dialect, compile_kwargs={"literal_binds": True}
    )
    assert str(rendered) == migration.SECONDS_BUCKET
