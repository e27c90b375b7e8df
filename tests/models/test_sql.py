"""The SQL objects under app/models/sql: a database migrated to head defines each one exactly as
its file does, and the check that says so catches every kind of difference."""

import ast
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, text

from app.models.sql import drift, sql_objects
from config import config
from root import ROOT_DIR


@pytest.fixture
def connection() -> Iterator[Connection]:
    with config.database.engine.connect() as connection, connection.begin() as transaction:
        yield connection
        transaction.rollback()


def test_a_database_migrated_to_head_defines_every_object_as_its_file(
    connection: Connection,
) -> None:
    assert len(sql_objects()) >= 19  # 10 functions, 9 triggers
    assert drift(connection) == []


def test_the_check_names_what_differs_what_is_missing_and_what_has_no_file(
    connection: Connection,
) -> None:
    for statement in (
        # job_status with another rule, a trigger gone, a function and a type of no file's.
        """CREATE OR REPLACE FUNCTION job_status(
            cancelled boolean, unresolved_errors bigint, steps_completed bigint,
            step_count bigint, event_count bigint
        ) RETURNS job_status LANGUAGE sql IMMUTABLE AS $$ SELECT 'running'::job_status $$""",
        "DROP TRIGGER mark_rollups_on_delete ON job_step_errors",
        "CREATE FUNCTION stray() RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$",
        "CREATE TYPE stray_row AS (a integer)",
    ):
        connection.execute(text(statement))
    # A file whose signature differs from the database's defines a second function.
    connection.execute(text("ALTER FUNCTION rollup_bucket(timestamptz) RENAME TO bucket"))
    connection.execute(
        text(
            "CREATE FUNCTION rollup_bucket(at timestamptz, grain interval) RETURNS timestamptz"
            " LANGUAGE sql AS $$ SELECT at $$"
        )
    )

    assert drift(connection) == [
        "function bucket: in the database, but no file under app/models/sql defines it",
        "function stray: in the database, but no file under app/models/sql defines it",
        "type stray_row: in the database, but no file under app/models/sql defines it",
        "app/models/sql/functions/job_status.sql: the database defines it otherwise",
        "app/models/sql/functions/rollup_bucket.sql: the database defines it otherwise",
        "app/models/sql/triggers/job_step_errors.mark_rollups_on_delete.sql: not in the database",
    ]
    # The check changed nothing: job_status is still the altered one.
    assert connection.scalar(text("SELECT job_status(false, 1, 0, 3, 1)")) == "running"


def test_the_check_reports_a_file_that_cannot_replace_the_database_definition(
    connection: Connection,
) -> None:
    # A function whose result type differs cannot be replaced in place.
    connection.execute(text("DROP FUNCTION rollup_bucket(timestamptz)"))
    connection.execute(
        text(
            "CREATE FUNCTION rollup_bucket(at timestamptz) RETURNS date"
            " LANGUAGE sql AS $$ SELECT at::date $$"
        )
    )
    [problem] = drift(connection)
    assert problem.startswith(
        "app/models/sql/functions/rollup_bucket.sql: cannot replace the database's definition"
    )


# Migrations written before the rule, deployed as they are.
IMPORTS_BEFORE_THE_RULE = {"2026_12_01_d5e8b2c4a1f3_deadlines_stalled_jobs_and_webhooks.py"}
MIGRATION_IMPORTS = {"alembic", "sqlalchemy", "collections", "typing", "datetime"}


def test_no_migration_imports_another_migration_or_the_application() -> None:
    for path in sorted((ROOT_DIR / "alembic/versions").glob("*.py")):
        if path.name in IMPORTS_BEFORE_THE_RULE:
            continue
        tree = ast.parse(path.read_text())
        modules = {
            name.split(".")[0]
            for node in ast.walk(tree)
            for name in (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
        }
        assert modules <= MIGRATION_IMPORTS, f"{path.name} imports {modules - MIGRATION_IMPORTS}"
