"""Cold start: importing `app.main` against importing its libraries alone, each in a fresh
interpreter, as a new Lambda instance would. Prints medians and the ratio (target: at most 1.3).

    .venv/bin/python -m benchmarks.coldstart [--runs 15]

The app is configured as in production (a database URL, no connection made at import).
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
]

PRODUCTION_ENV = {
    "APP_ENV": "production",
    "SECRET_KEY": "coldstart-benchmark-secret-key-0123456789",
    "DATABASE_URL": "postgresql://tracker@127.0.0.1:5432/tracker",
    "AWS_LAMBDA_FUNCTION_NAME": "tracker-coldstart",
    "LOG_LEVEL": "WARNING",
}


def time_import(statement: str) -> float:
    """Seconds one fresh interpreter spends running `statement` (interpreter start excluded)."""
    code = (
        "import time\n"
        "start = time.perf_counter()\n"
        f"{statement}\n"
        "print(time.perf_counter() - start)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT_DIR,
        env={**os.environ, **PRODUCTION_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


def measure(statement: str, runs: int) -> list[float]:
    time_import(statement)  # warm the file system cache and bytecode
    return [time_import(statement) for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    libraries = measure("; ".join(f"import {name}" for name in LIBRARIES), args.runs)
    application = measure("import app.main", args.runs)

    libraries_ms = statistics.median(libraries) * 1000
    application_ms = statistics.median(application) * 1000
    print(f"runs per measurement: {args.runs}")
    print(f"libraries alone : median {libraries_ms:7.1f} ms  (min {min(libraries) * 1000:.1f})")
    print(f"import app.main : median {application_ms:7.1f} ms  (min {min(application) * 1000:.1f})")
    print(f"ratio app/libraries: {application_ms / libraries_ms:.2f}  (target <= 1.3)")


if __name__ == "__main__":
    main()
