"""Developer tasks: `python tasks.py -h` lists them, `python tasks.py COMMAND -h` explains one.

Database tasks are named db:<env>:<action>, with env one of dev, test, prod; each configures the
application for its environment first, exactly as the API would be.
"""

import argparse
import getpass
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy.exc import OperationalError

from config import ConfigError, config
from config.database import create_database, drop_database
from config.validation import describe_validation_error
from root import root_path

if TYPE_CHECKING:
    from app.schemas.job_configuration import JobConfigurationFile

ENVIRONMENTS = {"dev": "development", "test": "test", "prod": "production"}


class TaskError(Exception):
    """A task could not run; the message is printed as one line."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


Runner = Callable[[argparse.Namespace], None]
EnvRunner = Callable[[str, argparse.Namespace], None]
ArgumentAdder = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Task:
    name: str
    help: str
    run: Runner
    add_arguments: ArgumentAdder | None = None


TASKS: dict[str, Task] = {}
DB_ACTIONS: list[str] = []


def task(
    name: str, help: str, add_arguments: ArgumentAdder | None = None
) -> Callable[[Runner], Runner]:
    def register(run: Runner) -> Runner:
        TASKS[name] = Task(name, help, run, add_arguments)
        return run

    return register


def db_task(
    action: str, help: str, add_arguments: ArgumentAdder | None = None
) -> Callable[[EnvRunner], EnvRunner]:
    """Register `run(env, args)` as db:<env>:<action> for every environment."""

    def register(run: EnvRunner) -> EnvRunner:
        DB_ACTIONS.append(action)
        for env, app_env in ENVIRONMENTS.items():
            name = f"db:{env}:{action}"
            TASKS[name] = Task(name, f"{help} ({app_env})", partial(run, env), add_arguments)
        return run

    return register


def setup(env: str) -> None:
    config.setup(ENVIRONMENTS[env])  # logs which database it uses


def require_yes(env: str, args: argparse.Namespace, action: str) -> None:
    if env == "prod" and not args.yes:
        raise TaskError(f"refusing to {action} the production database without --yes", 2)


def alembic_config() -> AlembicConfig:
    return AlembicConfig(str(root_path("alembic.ini")))


def add_yes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--yes", action="store_true", help="confirm a destructive prod task")


def add_revision(default: str) -> ArgumentAdder:
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("revision", nargs="?", default=default, help=f"default {default}")
        add_yes(parser)

    return add


# Database tasks, one set per environment -------------------------------------------------------


@db_task("reset", "drop and re-create the database, empty", add_yes)
def reset(env: str, args: argparse.Namespace) -> None:
    require_yes(env, args, "reset")
    setup(env)
    url = config.database.url
    config.database.dispose()
    drop_database(url)
    create_database(url)
    print(f"Database {url.database} re-created, empty: run upgrade next")


@db_task("upgrade", "apply migrations up to REVISION (default head)", add_revision("head"))
def upgrade(env: str, args: argparse.Namespace) -> None:
    setup(env)
    command.upgrade(alembic_config(), args.revision)
    if args.revision == "head":
        # What the deploy does after migrating: secrets stored before encryption get encrypted.
        from app.scheduled import run_task

        counts = run_task("reencrypt_webhook_secrets")
        if counts["webhook_secrets_reencrypted"]:
            print(f"{counts['webhook_secrets_reencrypted']} webhook signing secrets encrypted")


@db_task("downgrade", "revert migrations down to REVISION (default -1)", add_revision("-1"))
def downgrade(env: str, args: argparse.Namespace) -> None:
    require_yes(env, args, "downgrade")
    setup(env)
    command.downgrade(alembic_config(), args.revision)


def add_seed_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--if-empty", action="store_true", help="only seed an empty database")
    parser.add_argument(
        "--jobs", type=int, default=0, help="also add this many bulk jobs (for benchmarks)"
    )
    parser.add_argument("--events-per-job", type=int, default=20, help="default 20")
    parser.add_argument("--customers", type=int, default=20, help="bulk customers (default 20)")
    parser.add_argument("--months", type=int, default=12, help="bulk history (default 12)")
    add_yes(parser)


@db_task("seed", "add the demo data (idempotent)", add_seed_options)
def seed(env: str, args: argparse.Namespace) -> None:
    require_yes(env, args, "seed demo data into")
    setup(env)
    import seed as seed_module

    seed_module.seed_db(if_empty=args.if_empty)
    if args.jobs > 0:
        seed_module.seed_bulk(
            jobs=args.jobs,
            events_per_job=args.events_per_job,
            customer_count=args.customers,
            months=args.months,
        )


@db_task("current", "show the database's migration revision")
def current(env: str, args: argparse.Namespace) -> None:
    setup(env)
    command.current(alembic_config())


@db_task("sql-drift", "compare the database's SQL functions and triggers with app/models/sql")
def sql_drift(env: str, args: argparse.Namespace) -> None:
    setup(env)
    from app.models.sql import drift

    with config.database.engine.connect() as connection, connection.begin():
        problems = drift(connection)
    for problem in problems:
        print(problem)
    if problems:
        raise TaskError(f"{len(problems)} SQL object(s) differ from app/models/sql")
    print("Every SQL function and trigger is as its file under app/models/sql defines it")


# Other tasks ------------------------------------------------------------------------------------


def add_message(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--message", required=True, help="what the migration does")


@task("db:revision", "autogenerate a migration from the models (against dev)", add_message)
def revision(args: argparse.Namespace) -> None:
    setup("dev")
    command.revision(alembic_config(), message=args.message, autogenerate=True)


@task("lint", "ruff check, ruff format --check and mypy")
def lint(args: argparse.Namespace) -> None:
    commands = [
        [sys.executable, "-m", "ruff", "check", "."],
        [sys.executable, "-m", "ruff", "format", "--check", "."],
        [sys.executable, "-m", "mypy"],
    ]
    for tool in commands:
        print("$", " ".join(tool[2:]), flush=True)
        if subprocess.run(tool).returncode != 0:
            raise TaskError(" ".join(tool[2:]) + " failed")


def add_fuzz_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-examples",
        type=int,
        help="examples per operation, and stateful scenarios (default: the suite's, 25)",
    )


@task("fuzz", "schemathesis over the whole API against the test database", add_fuzz_options)
def fuzz(args: argparse.Namespace) -> None:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/api/test_fuzz.py",
        "tests/api/test_fuzz_campaign.py",
    ]
    if args.max_examples is not None:
        if args.max_examples < 1:
            raise TaskError("--max-examples must be at least 1", 2)
        command.append(f"--fuzz-examples={args.max_examples}")
    print("$", " ".join(command[2:]), flush=True)
    if subprocess.run(command).returncode != 0:
        raise TaskError("fuzzing found failures (see above)")


PASSWORD_ENV = "TRACKER_PASSWORD"  # noqa: S105 (the variable's name)


def read_password(args: argparse.Namespace) -> str:
    """The new password: from TRACKER_PASSWORD for scripts, else asked for twice."""
    from app.schemas.fields import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH
    from config.settings import TaskInputs

    given = TaskInputs().tracker_password
    password = given.get_secret_value() if given is not None else None
    if password is None:
        if not sys.stdin.isatty():
            raise TaskError(f"no terminal to ask for the password: set {PASSWORD_ENV}", 2)
        password = getpass.getpass("New password: ")
        if getpass.getpass("Repeat it: ") != password:
            raise TaskError("the passwords differ", 2)
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        raise TaskError(
            f"the password must be {PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters", 2
        )
    return password


def valid_email(email: str) -> str:
    from pydantic import TypeAdapter, ValidationError

    from app.schemas.fields import Email

    try:
        return str(TypeAdapter(Email).validate_python(email))
    except ValidationError:
        raise TaskError(f"not a valid email address: {email!r}", 2) from None


def add_user_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", choices=ENVIRONMENTS, default="dev", help="default dev")
    parser.add_argument("--email", required=True)


def add_admin_options(parser: argparse.ArgumentParser) -> None:
    add_user_options(parser)
    parser.add_argument("--first-name", default="Admin")
    parser.add_argument("--last-name", default="User")


@task(
    "users:create-admin",
    f"create an admin (password asked for, or from {PASSWORD_ENV})",
    add_admin_options,
)
def create_admin(args: argparse.Namespace) -> None:
    from app.internal.errors import DomainError
    from app.models import Role
    from app.services import users

    email = valid_email(args.email)
    setup(args.env)
    password = read_password(args)
    with config.database.SessionLocal() as session:
        try:
            user = users.add_user(
                session,
                email=email,
                first_name=args.first_name,
                last_name=args.last_name,
                password=password,
                role=Role.ADMIN,
                customer_id=None,
            )
        except DomainError as error:
            raise TaskError(error.detail) from None
        session.commit()
        print(f"Admin {user.email} created (id {user.id})")


@task(
    "users:set-password",
    f"set a user's password and end their sessions (asked for, or from {PASSWORD_ENV})",
    add_user_options,
)
def set_password(args: argparse.Namespace) -> None:
    from app.services import users

    setup(args.env)
    password = read_password(args)
    with config.database.SessionLocal() as session:
        user = users.get_user_by_email(session, args.email)
        if user is None:
            raise TaskError(f"no user with email {args.email}")
        users.set_password(session, user=user, password=password)
        session.commit()
        print(f"Password of {user.email} changed; their sessions are ended")


def add_load_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="a JSON file, or YAML if it ends .yaml/.yml")
    parser.add_argument("--env", choices=ENVIRONMENTS, default="dev", help="default dev")
    add_yes(parser)


def read_configurations_file(path: Path) -> "JobConfigurationFile":
    """The file's job configurations, validated; every problem is one TaskError line."""
    from pydantic import ValidationError

    from app.schemas.job_configuration import JobConfigurationFile

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error)
        raise TaskError(f"cannot read {path}: {reason}") from None
    try:
        if path.suffix.lower() in {".yaml", ".yml"}:
            return JobConfigurationFile.model_validate(load_yaml(path, text))
        return JobConfigurationFile.model_validate_json(text)
    except ValidationError as error:
        problems = describe_validation_error(error, subject="file", most=3)
        raise TaskError(f"{path} is not valid: {problems}") from None


def load_yaml(path: Path, text: str) -> object:
    try:
        import yaml
    except ImportError:
        raise TaskError("YAML files need PyYAML: pip install -r requirements-dev.txt") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise TaskError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None


@task(
    "configs:load",
    "create or version the job configurations of a JSON or YAML file",
    add_load_options,
)
def load_configurations(args: argparse.Namespace) -> None:
    from app.services import job_configurations

    require_yes(args.env, args, "load job configurations into")
    configurations_file = read_configurations_file(args.file)
    setup(args.env)
    with config.database.SessionLocal() as session:
        outcomes = job_configurations.upsert_configurations(
            session, configs_in=configurations_file.configurations()
        )
        lines = [f"{outcome.tag} v{outcome.version}: {outcome.result}" for outcome in outcomes]
        session.commit()
    print("\n".join(lines))


def add_scheduled_task_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="the task to run; without one, list them")
    parser.add_argument("--env", choices=ENVIRONMENTS, default="dev", help="default dev")


@task(
    "tasks:run",
    "run a scheduled task now, as the Lambda worker's schedule does (no NAME: list them)",
    add_scheduled_task_options,
)
def run_scheduled_task(args: argparse.Namespace) -> None:
    from app.scheduled import SCHEDULED_TASKS, UnknownTask, run_task

    if args.name is None:
        width = max(len(name) for name in SCHEDULED_TASKS)
        for name, scheduled in SCHEDULED_TASKS.items():
            print(f"{name.ljust(width)}  {scheduled.summary}")
        return
    if args.name not in SCHEDULED_TASKS:
        raise TaskError(str(UnknownTask(args.name)), 2)
    setup(args.env)
    counts = run_task(args.name)
    print(f"{args.name}: " + (", ".join(f"{key} {value}" for key, value in counts.items())))


# Command line -----------------------------------------------------------------------------------


def usage() -> str:
    width = max(len(name) for name in TASKS)
    lines = [f"  {name.ljust(width)}  {TASKS[name].help}" for name in sorted(TASKS)]
    return "usage: python tasks.py COMMAND [options]\n\ncommands:\n" + "\n".join(lines)


def unknown_command(name: str) -> str:
    parts = name.split(":")
    if len(parts) == 3 and parts[0] == "db" and parts[1] not in ENVIRONMENTS:
        return f"unknown environment {parts[1]!r}: expected one of {', '.join(ENVIRONMENTS)}"
    if len(parts) == 3 and parts[0] == "db" and parts[2] not in DB_ACTIONS:
        return f"unknown database action {parts[2]!r}: expected one of {', '.join(DB_ACTIONS)}"
    return f"unknown command {name!r}"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    selected = TASKS.get(name)
    if selected is None:
        print(f"error: {unknown_command(name)}\n\n{usage()}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"python tasks.py {name}", description=selected.help)
    if selected.add_arguments:
        selected.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        selected.run(args)
    except TaskError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        print(f"error: cannot reach the database: {reason}", file=sys.stderr)
        return 1
    finally:
        if config.app_env is not None:
            config.database.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
