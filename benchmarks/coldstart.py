"""Cold start: importing `app.main` against importing its libraries alone, as a new Lambda
instance would. Prints medians and the ratio (target: at most 1.3).

    .venv/bin/python -m benchmarks.coldstart [--runs 15]

The app is configured as in production (a database URL, no connection made at import). Each run
is a fresh interpreter that imports the libraries, then `app.main`: the ratio is that run's whole
import over its libraries' part. Measuring both in the same process, moments apart, keeps a
busy machine from slowing one and not the other. Times are elapsed and CPU (which leaves out
waiting for a core another process holds). A library module that `app.main` loads and the list
below lacks is printed, so that the baseline stays all of the app's libraries.
"""

import argparse
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass

from root import ROOT_DIR

LIBRARIES = [
    "fastapi",
    "fastapi.security",
    "fastapi.middleware.cors",
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
    # Imported by the libraries themselves while the app is set up: FastAPI checks every
    # route's types against pydantic.v1, SQLAlchemy's psycopg2 dialect loads psycopg2.extras
    # when the engine is made.
    "pydantic.v1",
    "psycopg2.extras",
]
FIRST_PARTY = ("app", "config", "root")

PRODUCTION_ENV = {
    "APP_ENV": "production",
    "SECRET_KEY": "coldstart-benchmark-secret-key-0123456789",
    "WEBHOOK_SECRET_KEYS": "coldstart-benchmark-webhook-key-0123456789",
    "DATABASE_URL": "postgresql://tracker@127.0.0.1:5432/tracker",
    "AWS_LAMBDA_FUNCTION_NAME": "tracker-coldstart",
    "LOG_LEVEL": "WARNING",
}

CHILD = f"""
import sys, time
clock, cpu = time.perf_counter(), time.process_time()
{"; ".join(f"import {name}" for name in LIBRARIES)}
libraries = time.perf_counter() - clock, time.process_time() - cpu
loaded = set(sys.modules)
clock, cpu = time.perf_counter(), time.process_time()
import app.main
application = time.perf_counter() - clock, time.process_time() - cpu
missing = sorted(
    name for name in set(sys.modules) - loaded
    if name.partition(".")[0] not in {FIRST_PARTY!r} and not name.startswith("_")
    and name.partition(".")[0] not in sys.stdlib_module_names
)
print(*libraries, *application, ",".join(missing))
"""


@dataclass(frozen=True)
class Run:
    """Milliseconds of one fresh interpreter, elapsed and CPU, of the libraries and app.main."""

    libraries: tuple[float, float]
    application: tuple[float, float]
    missing: list[str]


def run_once() -> Run:
    result = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=ROOT_DIR,
        env={**os.environ, **PRODUCTION_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    fields = result.stdout.strip().splitlines()[-1].split(" ")
    libraries_s, libraries_cpu, app_s, app_cpu = (float(value) * 1000 for value in fields[:4])
    missing = fields[4].split(",") if len(fields) > 4 and fields[4] else []
    return Run((libraries_s, libraries_cpu), (app_s, app_cpu), missing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    run_once()  # warm the file system cache and bytecode
    runs = [run_once() for _ in range(args.runs)]

    print(f"runs: {args.runs} (target: ratio <= 1.3)")
    for label, at in (("elapsed", 0), ("cpu", 1)):
        libraries = [run.libraries[at] for run in runs]
        whole = [run.libraries[at] + run.application[at] for run in runs]
        ratios = [total / part for total, part in zip(whole, libraries, strict=True)]
        print(
            f"{label:<8} libraries {statistics.median(libraries):6.1f} ms  "
            f"import app.main {statistics.median(whole):6.1f} ms  "
            f"ratio {statistics.median(ratios):.2f} (runs {min(ratios):.2f} to {max(ratios):.2f})"
        )
    missing = {name for run in runs for name in run.missing}
    if missing:
        print(
            f"library modules app.main loads that the baseline lacks: {', '.join(sorted(missing))}"
        )


if __name__ == "__main__":
    main()
