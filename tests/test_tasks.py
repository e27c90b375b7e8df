"""tasks.py, run as a developer runs it, against a scratch database."""

from subprocess import CompletedProcess

import pytest
from sqlalchemy import create_engine, func, select

import seed
from app.internal.security import verify_password
from app.models import Customer, Role, User
from tests.support import database_env, run_python, scratch_database


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
        for action in ("reset", "upgrade", "downgrade", "seed", "current"):
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
    with scratch_database() as url:
        env = database_env(url)

        def run(*args: str) -> str:
            result = run_python("tasks.py", *args, env=env)
            assert result.returncode == 0, result.stdout + result.stderr
            return result.stdout + result.stderr

        run("db:test:upgrade")
        assert "(head)" in run("db:test:current")

        first = run("db:test:seed")
        assert "Seeded:" in first
        assert first.count("(shown once): trk_") == len(seed.USER_DATA)
        seeded = count_customers(env["DATABASE_URL"])
        assert seeded == len(seed.CUSTOMER_DATA)
        second = run("db:test:seed")
        assert "Seeded: 0 customers, 0 users, 0 api keys" in second
        assert "trk_" not in second
        assert count_customers(env["DATABASE_URL"]) == seeded
        assert "skipped" in run("db:test:seed", "--if-empty")

        run("db:test:downgrade", "base")
        assert "(head)" not in run("db:test:current")

        run("db:test:reset")
        run("db:test:upgrade")
        assert count_customers(env["DATABASE_URL"]) == 0


def test_users_tasks_create_an_admin_and_set_a_password() -> None:
    with scratch_database() as url:
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
