"""What each Lambda entry module loads at import, in a fresh interpreter with production settings:
each function imports what it serves. The API's cold start carries neither the worker's, the
webhook sender's nor the deploy's code; the worker and migration functions build no app and no
routes (and import what a schedule or a deploy needs only when one arrives)."""

import json

import pytest

from tests.helpers.processes import run_python

PRODUCTION = {
    "APP_ENV": "production",
    "SECRET_KEY": "import-rules-test-secret-key-0123456789abcdef",
    "WEBHOOK_SECRET_KEYS": "import-rules-test-webhook-key-0123456789abcdef",
    "DATABASE_URL": "postgresql://tracker@127.0.0.1:1/tracker",  # never connected to
    "AWS_LAMBDA_FUNCTION_NAME": "tracker-api",
}

# Modules, or packages with everything under them.
NEVER_IMPORTED = {
    "app.main": [
        "httpx",
        "httpcore",
        "app.services.webhook_delivery",
        "app.scheduled",
        "app.deploy",
        "alembic",
        "app.worker",
        # Only with a secret to read (config/secrets.py), and never the embedded server.
        "config.secrets",
        "config.embedded",
    ],
    "app.worker": [
        "fastapi",
        "app.main",
        "app.routers",
        "app.dependencies",
        "httpx",
        "app.scheduled",
        "app.deploy",
        "alembic",
        "config.secrets",
        "config.embedded",
    ],
}


def modules_loaded_by(module: str) -> set[str]:
    snippet = f"import json, sys\nimport {module}\nprint(json.dumps(sorted(sys.modules)))\n"
    result = run_python("-c", snippet, env=PRODUCTION)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


@pytest.mark.parametrize("entry", sorted(NEVER_IMPORTED))
def test_an_entry_module_loads_only_what_its_function_serves(entry: str) -> None:
    loaded = modules_loaded_by(entry)
    assert entry in loaded
    unwanted = sorted(
        name
        for name in loaded
        for never in NEVER_IMPORTED[entry]
        if name == never or name.startswith(f"{never}.")
    )
    assert unwanted == []


def test_the_api_s_import_loads_its_routes() -> None:
    # What the rules above keep out is really there to keep out: the API loads its routes.
    assert {"fastapi", "app.routers.events", "app.dependencies"} <= modules_loaded_by("app.main")
