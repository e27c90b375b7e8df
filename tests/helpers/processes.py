"""Running the project's own commands as a developer does, in a subprocess."""

import os
import subprocess
import sys
from collections.abc import Mapping

from sqlalchemy.engine import URL

from root import ROOT_DIR


def run_python(
    *args: str, env: Mapping[str, str | None] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `python ARGS` in the project root with the test environment plus `env` (where a
    variable is None, without it)."""
    merged: dict[str, str | None] = {**os.environ, "APP_ENV": "test", **(env or {})}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT_DIR,
        env={name: value for name, value in merged.items() if value is not None},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def database_env(url: URL) -> dict[str, str]:
    return {"DATABASE_URL": url.render_as_string(hide_password=False)}
