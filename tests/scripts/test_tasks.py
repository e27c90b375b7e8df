"""tasks.py, run as a developer runs it, against a scratch database."""

import json
import textwrap
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
from sqlalchemy import Select, create_engine, func, select

import seed
from app.internal.security import verify_password
from app.models import Customer, Job, JobConfiguration, JobStatus, Role, User
from config import config
from config.database import scratch_database
from tests.helpers.processes import database_env, run_python


def scalar_rows(database_url: str, statement: Select[Any]) -> list[Any]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return list(connection.scalars(statement))
    finally:
        engine.dispose()


def count_customers(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(Customer)).scalar_one()
    finally:
        engine.dispose()


def test_help_lists_every_command() -> None:
    result = run_python("tasks.py", "-h")
    assert result.returncode == 0
    for env in ("dev", "test", "prod"):
        for action in ("reset", "upgrade", "downgrade", "seed", "current", "sql-drift"):
            assert f"db:{env}:{action}" in result.stdout
    assert "db:revision" in result.stdout
    assert "lint" in result.stdout


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("db:staging:upgrade", "unknown environment 'staging': expected one of dev, test, prod"),
        ("db:dev:explode", "unknown database action 'explode'"),
        ("frobnicate", "unknown command 'frobnicate'"),
    ],
)
def test_unknown_commands_are_usage_errors(command: str, message: str) -> None:
    result = run_python("tasks.py", command)
    assert result.returncode == 2
    assert message in result.stderr
    assert "db:dev:upgrade" in result.stderr  # the valid commands are listed


def test_an_unreachable_database_is_one_clear_line() -> None:
    result = run_python(
        "tasks.py",
        "db:test:upgrade",
        env={"DATABASE_URL": "postgresql://tracker@127.0.0.1:1/tracker"},
    )
    assert result.returncode == 1
    assert "error: cannot reach the database" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("action", ["reset", "downgrade", "seed"])
def test_destructive_production_tasks_need_yes(action: str) -> None:
    result = run_python("tasks.py", f"db:prod:{action}")
    assert result.returncode == 2
    assert "without --yes" in result.stderr


def test_production_tasks_refuse_unsafe_settings_in_one_line() -> None:
    result = run_python("tasks.py", "db:prod:current", env={"DATABASE_URL": "postgresql://u@h/d"})
    assert result.returncode == 1
    assert "SECRET_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_database_lifecycle_on_a_scratch_database() -> None:
    with scratch_database(config.database.url) as url:
        env = database_env(url)

        def run(*args: str) -> str:
            result = run_python("tasks.py", *args, env=env)
            assert result.returncode == 0, result.stdout + result.stderr
            return result.stdout + result.stderr

        run("db:test:upgrade")
        assert "(head)" in run("db:test:current")
        assert "Every SQL function and trigger is as its file" in run("db:test:sql-drift")

        first = run("db:test:seed")
        assert "Seeded:" in first
        assert first.count("(shown once): trk_") == len(seed.USER_DATA)
        seeded = count_customers(env["DATABASE_URL"])
        assert seeded == len(seed.CUSTOMER_DATA)
        second = run("db:test:seed")
        assert (
            "Seeded: 0 customers, 0 users, 0 configurations, 0 jobs, 0 api keys, 0 history jobs"
            in second
        )
        assert "trk_" not in second
        assert count_customers(env["DATABASE_URL"]) == seeded
        assert "skipped" in run("db:test:seed", "--if-empty")
        statuses = scalar_rows(env["DATABASE_URL"], select(Job.status).distinct())
        assert set(statuses) == set(JobStatus)

        bulk = run("db:test:seed", "--jobs", "30", "--events-per-job", "6", "--customers", "2")
        assert "Bulk seeded 30 jobs" in bulk
        # A job per customer and planned status, a stalled one, and the history.
        demo_jobs = len(seed.CUSTOMER_DATA) * (len(seed.DEMO_JOB_PLAN) + 1) + seed.HISTORY_JOBS
        assert len(scalar_rows(env["DATABASE_URL"], select(Job.id))) == 30 + demo_jobs

        # Back to the revision before record_event's (later ones need not touch SQL objects).
        run("db:test:downgrade", "e7a4c9d2b816")
        drifted = run_python("tasks.py", "db:test:sql-drift", env=env)
        assert drifted.returncode == 1
        assert "app/models/sql/functions/record_event.sql: not in the database" in drifted.stdout
        assert "SQL object(s) differ from app/models/sql" in drifted.stderr

        run("db:test:downgrade", "base")
        assert "(head)" not in run("db:test:current")

        run("db:test:reset")
        run("db:test:upgrade")
        assert count_customers(env["DATABASE_URL"]) == 0


def test_users_tasks_create_an_admin_and_set_a_password() -> None:
    with scratch_database(config.database.url) as url:
        env = database_env(url)
        assert run_python("tasks.py", "db:test:upgrade", env=env).returncode == 0

        def users_task(
            *args: str, password: str | None = "first-password"
        ) -> CompletedProcess[str]:
            extra = {"TRACKER_PASSWORD": password} if password else {}
            return run_python("tasks.py", *args, "--env", "test", env={**env, **extra})

        created = users_task("users:create-admin", "--email", "Boss@Example.com")
        assert created.returncode == 0, created.stderr
        assert "Admin boss@example.com created" in created.stdout

        again = users_task("users:create-admin", "--email", "boss@example.com")
        assert again.returncode == 1
        assert "already exists" in again.stderr

        assert users_task("users:create-admin", "--email", "nope").returncode == 2
        short = users_task("users:create-admin", "--email", "x@example.com", password="short")
        assert short.returncode == 2
        no_terminal = users_task("users:create-admin", "--email", "y@example.com", password=None)
        assert no_terminal.returncode == 2
        assert "TRACKER_PASSWORD" in no_terminal.stderr

        changed = users_task(
            "users:set-password", "--email", "boss@example.com", password="second-password"
        )
        assert changed.returncode == 0, changed.stderr
        missing = users_task("users:set-password", "--email", "ghost@example.com")
        assert missing.returncode == 1

        engine = create_engine(env["DATABASE_URL"])
        try:
            with engine.connect() as connection:
                user = connection.execute(
                    select(User.role, User.password_hash).where(User.email == "boss@example.com")
                ).one()
        finally:
            engine.dispose()
        assert user.role == Role.ADMIN
        assert verify_password("second-password", user.password_hash)
        assert not verify_password("first-password", user.password_hash)


def configurations_file(*entries: tuple[str, str, str]) -> dict[str, Any]:
    """A file of configurations given as (tag, name, cost of their one step)."""
    return {
        "job_configs": [
            {
                "name": name,
                "tag": tag,
                "step_configurations": [{"name": "Scan", "tag": "scan", "points": 3, "cost": cost}],
            }
            for tag, name, cost in entries
        ]
    }


def test_configs_load_creates_and_versions_configurations_from_a_file(tmp_path: Path) -> None:
    with scratch_database(config.database.url) as url:
        env = database_env(url)
        assert run_python("tasks.py", "db:test:upgrade", env=env).returncode == 0

        def load(path: Path, *options: str) -> CompletedProcess[str]:
            return run_python("tasks.py", "configs:load", str(path), *options, env=env)

        def write(name: str, content: dict[str, Any]) -> Path:
            path = tmp_path / name
            path.write_text(json.dumps(content))
            return path

        first = load(write("first.json", configurations_file(("ct", "CT", "1.5"))), "--env", "test")
        assert first.returncode == 0, first.stderr
        assert first.stdout.splitlines() == ["ct v1: created"]

        yaml_file = tmp_path / "second.yaml"
        yaml_file.write_text(
            textwrap.dedent("""\
                job_configs:
                  - name: MRI
                    tag: mri
                    step_configurations:
                      - {name: Scan, tag: scan, points: 3, cost: 2}
                  - name: CT
                    tag: ct
                    step_configurations:
                      - {name: Scan, tag: scan, points: 3, cost: "1.50"}
            """)
        )
        second = load(yaml_file, "--env", "test")
        assert second.returncode == 0, second.stderr
        assert second.stdout.splitlines() == ["mri v1: created", "ct v1: unchanged"]

        changed = configurations_file(("ct", "CT", "1.75"), ("mri", "MRI", "2"))
        third = load(write("third.json", changed), "--env", "test")
        assert third.stdout.splitlines() == ["ct v2: new_version", "mri v1: unchanged"]

        invalid = configurations_file(("pet", "PET", "1"), ("ct", "CT", "1.00001"))
        refused = load(write("invalid.json", invalid), "--env", "test")
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [
            f"error: {tmp_path / 'invalid.json'} is not valid: "
            "job_configs.1.step_configurations.0.cost: "
            "Decimal input should have no more than 4 decimal places"
        ]

        not_json = tmp_path / "broken.json"
        not_json.write_text("{")
        broken = load(not_json, "--env", "test")
        assert broken.returncode == 1
        assert len(broken.stderr.strip().splitlines()) == 1
        assert "Invalid JSON" in broken.stderr

        missing = load(tmp_path / "missing.json", "--env", "test")
        assert missing.returncode == 1
        assert "cannot read" in missing.stderr
        for result in (refused, broken, missing):
            assert "Traceback" not in result.stderr

        production = load(write("prod.json", changed), "--env", "prod")
        assert production.returncode == 2
        assert "without --yes" in production.stderr
        assert run_python("tasks.py", "configs:load", env=env).returncode == 2

        engine = create_engine(env["DATABASE_URL"])
        try:
            with engine.connect() as connection:
                stored = connection.execute(
                    select(JobConfiguration.tag, JobConfiguration.version).order_by(
                        JobConfiguration.tag, JobConfiguration.version
                    )
                ).all()
        finally:
            engine.dispose()
        assert [tuple(row) for row in stored] == [("ct", 1), ("ct", 2), ("mri", 1)]
