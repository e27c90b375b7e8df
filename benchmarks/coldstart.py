"""Cold start: importing `app.main` against importing its libraries alone, as a new Lambda
instance would. Prints medians and the ratio (target: at most 1.3). Then the API function as
Lambda runs it (benchmarks/lambda_runtime.py), over --lambda-runs new instances: the init phase
as Lambda counts and bills it (process start to the first `next` request of the runtime
interface client), beside the same for a handler that imports nothing (the interpreter and the
client alone), and the first invocations after init: `GET /health`, then a step event.

    .venv/bin/python -m benchmarks.coldstart [--runs 15] [--lambda-runs 7] [--database-url URL]

The app is configured as in production (a database URL, no connection made at import). Each run
is a fresh interpreter that imports the libraries, then `app.main`: the ratio is that run's whole
import over its libraries' part. Measuring both in the same process, moments apart, keeps a
busy machine from slowing one and not the other. Times are elapsed and CPU (which leaves out
waiting for a core another process holds). A library module that `app.main` loads and the list
below lacks is printed, so that the baseline stays all of the app's libraries.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass

from sqlalchemy.engine import URL

from benchmarks.lambda_event import http_api_event
from benchmarks.lambda_runtime import running_function
from benchmarks.support import add_database_url, local_maintenance, migrate, scratch_database
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
    # The runtime's library for SnapStart's hooks (in the AWS base image), loaded on Lambda.
    "snapshot_restore_py",
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


@dataclass(frozen=True)
class Instance:
    """Milliseconds of one new function instance under the runtime interface client."""

    init: float
    init_cpu: float
    health: float
    event: float


# A handler of the standard library: the interpreter and the runtime client, importing nothing.
EMPTY_HANDLER = "json.dumps"


def runtime_only_ms(env: dict[str, str]) -> tuple[float, float]:
    with running_function(EMPTY_HANDLER, env) as function:
        function.wait_until_ready()
        assert function.init_ms is not None
        return function.init_ms, function.cpu_ms()


def instance(env: dict[str, str], api_key: str, job_id: int, step: str) -> Instance:
    with running_function("app.main.handler", env) as function:
        function.wait_until_ready()
        assert function.init_ms is not None
        init_cpu = function.cpu_ms()
        health = function.runtime.invoke(http_api_event("GET", "/health", None, api_key))
        body = {"kind": "step", "name": step}
        path = f"/jobs/{job_id}/events"
        event = function.runtime.invoke(http_api_event("POST", path, body, api_key))
        for answer, status in ((health, 200), (event, 201)):
            if answer.kind != "response" or answer.body["statusCode"] != status:
                raise SystemExit(f"the function answered {json.dumps(answer.body)[:500]}")
        return Instance(function.init_ms, init_cpu, health.duration_ms, event.duration_ms)


def measure_instances(url: URL, runs: int) -> tuple[list[Instance], list[tuple[float, float]]]:
    # Only here: the data is made by the app's services, which the import runs must not load.
    from benchmarks.ingest import Data

    migrate(url)
    data = Data(url)
    try:
        [plan] = data.per_worker(runs + 1, 1, "coldstart")
    finally:
        data.close()
    env = {**PRODUCTION_ENV, "DATABASE_URL": url.render_as_string(hide_password=False)}
    env.pop("AWS_LAMBDA_FUNCTION_NAME")  # the runtime client's environment names the function
    instances, runtimes = [], []
    for planned in plan[: runs + 1]:
        runtimes.append(runtime_only_ms(env))
        instances.append(instance(env, data.api_key, planned.job_id, planned.step.tag))
    # The first of each warmed the file system cache.
    return instances[1:], runtimes[1:]


def print_instances(instances: list[Instance], runtimes: list[tuple[float, float]]) -> None:
    def median(values: list[float]) -> str:
        return f"{statistics.median(values):6.1f} ms (runs {min(values):.1f} to {max(values):.1f})"

    print(f"\nthe API function under the runtime interface client, {len(instances)} instances")
    print(f"  init, process start to the first next: {median([i.init for i in instances])}")
    print(f"    of which CPU:                        {median([i.init_cpu for i in instances])}")
    print(f"  init of a handler importing nothing:   {median([r[0] for r in runtimes])}")
    print(f"    of which CPU:                        {median([r[1] for r in runtimes])}")
    print(f"  first invocation, GET /health:         {median([i.health for i in instances])}")
    print(f"  second invocation, a step event:       {median([i.event for i in instances])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--lambda-runs", type=int, default=7)
    add_database_url(parser)
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
    if args.lambda_runs > 0:
        maintenance = local_maintenance(parser, args.database_url)
        with scratch_database(maintenance, "tracker_coldstart") as url:
            print_instances(*measure_instances(url, args.lambda_runs))


if __name__ == "__main__":
    main()
