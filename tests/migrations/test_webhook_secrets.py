"""Signing secrets stored before encryption: the migration keeps them, the deploy's migration
step encrypts them under the configured key and empties the plain column, and a downgrade
(which cannot decrypt) disables the endpoints whose secret it cannot give back, saying why."""

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from app.internal.secret_box import SecretBox
from config import config
from config.database import scratch_database
from tests.helpers.processes import database_env, run_python

BEFORE_ENCRYPTION = "a1f4c7e2b9d3"
DEPLOY_MIGRATES = (
    "from config import config\n"
    "config.setup()\n"
    "from app import deploy\n"
    "print(deploy.migrate()['result'])\n"
)
KEY = "migration-test-webhook-key-0123456789abcdef"
SECRET = "whsec_" + "QUJD" * 11  # base64 of 33 bytes: a secret as the API made them


@pytest.fixture
def scratch() -> Iterator[tuple[URL, Engine]]:
    with scratch_database(config.database.url) as url:
        engine = create_engine(url)
        try:
            yield url, engine
        finally:
            engine.dispose()


def run(url: URL, *args: str) -> str:
    result = run_python(*args, env={**database_env(url), "WEBHOOK_SECRET_KEYS": KEY})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_deploy_encrypts_the_secrets_stored_before_and_a_downgrade_disables_them(
    scratch: tuple[URL, Engine],
) -> None:
    url, engine = scratch
    run(url, "-m", "alembic", "upgrade", BEFORE_ENCRYPTION)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO webhook_endpoints (url, event_types, secret)"
                " VALUES ('https://hooks.example/a', '{job.failed}', :secret)"
            ),
            {"secret": SECRET},
        )

    answer = run(url, "-c", DEPLOY_MIGRATES)
    assert "1 webhook signing secrets encrypted" in answer
    with engine.connect() as connection:
        plain, encrypted = connection.execute(
            text("SELECT secret, secret_encrypted FROM webhook_endpoints")
        ).one()
        dump = str(connection.execute(text("SELECT * FROM webhook_endpoints")).all())
    assert plain is None
    assert SecretBox([KEY]).decrypt(encrypted) == SECRET
    assert SECRET.removeprefix("whsec_") not in dump

    run(url, "-m", "alembic", "downgrade", BEFORE_ENCRYPTION)
    with engine.connect() as connection:
        secret, enabled, reason = connection.execute(
            text("SELECT secret, enabled, disabled_reason FROM webhook_endpoints")
        ).one()
    assert secret.startswith("whsec_")
    assert secret != SECRET
    assert enabled is False
    assert "register it again" in reason
