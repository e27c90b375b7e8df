"""Cold start: importing `app.main` against importing its libraries alone, each in a fresh
interpreter, as a new Lambda instance would. Prints medians and the ratio (target: at most 1.3).

    .venv/bin/python -m benchmarks.coldstart [--runs 15]

The app is configured as in production (a database URL, no connection made at import). The two
measurements alternate, so that a busy machine slows both alike, and each is taken as elapsed
time and as the CPU time of the interpreter (which does not count waiting for a core another
process holds: the steadier figure on a shared machine).
"""

import argparse
import os
import statistics
import subprocess
import sys

from root import ROOT_DIR

LIBRARIES = [
    "fastapi",
    "fastapi.security",
    "sqlalchemy",
    "sqlalchemy.orm",
    "sqlalchemy.dialects.postgresql.psycopg2",
    "pydantic_settings",
    "mangum",
    "psycopg2",
    "jwt",
    "pwdlib",
    "pwdlib.hashers.argon2",
    "email_validator",
    "fastapi.middleware.cors",
    # Imported by the libraries themselves while the app is set up: FastAPI checks every
    # route's types against pydantic.v1, SQLAlchemy's psycopg2 dialect loads psycopg2.extras
    # when the engine is made.
    "pydantic.v1",
    "psycopg2.extras",
]

PRODUCTION_ENV = {
    "APP_ENV": "production",
    "SECRET_KEY": "coldstart-benchmark-secret-key-0123456789",
    "DATABASE_URL": "postgresql://tracker@127.0.0.1:5432/tracker",
    "AWS_LAMBDA_FUNCTION_NAME": "tracker-coldstart",
    "LOG_LEVEL": "WARNING",
}


def time_import(statement: str) -> tuple[float, float]:
    """Elapsed and CPU seconds one fresh interpreter spends running `statement` (its own start
    excluded)."""
    code = (
        "import time\n"
        "start, cpu_start = time.perf_counter(), time.process_time()\n"
        f"{statement}\n"
        "print(time.perf_counter() - start, time.process_time() - cpu_start)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT_DIR,
        env={**os.environ, **PRODUCTION_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed, cpu = result.stdout.strip().splitlines()[-1].split()
    return float(elapsed), float(cpu)


def report(label: str, libraries: list[float], application: list[float]) -> None:
    libraries_ms = statistics.median(libraries) * 1000
    application_ms = statistics.median(application) * 1000
    print(
        f"{label:<8} libraries {libraries_ms:6.1f} ms (min {min(libraries) * 1000:.1f})  "
        f"app.main {application_ms:6.1f} ms (min {min(application) * 1000:.1f})  "
        f"ratio {application_ms / libraries_ms:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    libraries_statement = "; ".join(f"import {name}" for name in LIBRARIES)
    application_statement = "import app.main"
    for statement in (libraries_statement, application_statement):
        time_import(statement)  # warm the file system cache and bytecode
    libraries, application = [], []
    for _ in range(args.runs):
        libraries.append(time_import(libraries_statement))
        application.append(time_import(application_statement))

    print(f"runs per measurement: {args.runs} (target: ratio <= 1.3)")
    report("elapsed", [run[0] for run in libraries], [run[0] for run in application])
    report("cpu", [run[1] for run in libraries], [run[1] for run in application])


if __name__ == "__main__":
    main()
