"""An outside fuzzing campaign: the schemathesis CLI against the app served by uvicorn, as an
attacker or an auditor would run it. The examples and coverage phases (boundary values, every
undocumented method of every path, missing and invalid credentials, each parameter left out)
with every check, `unsupported_method`, `allow_header_conformance` and `ignored_auth` among them,
once per caller: an admin and a client, by bearer token and by API key. `tests/api/test_fuzz.py`
does the random fuzzing and the stateful scenarios.

Each run starts from a fresh world in the test database (committed for real: the server is
another process), which the `committed` fixture empties afterwards. A failure prints the CLI's
report: each failing request as a `curl` command.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import config
from root import ROOT_DIR
from tests.api.test_fuzz import IDENTITIES, VALID_INPUT_STATUSES, World, empty_database, make_world
from tests.helpers.factories import PASSWORD
from tests.helpers.processes import database_env

pytestmark = pytest.mark.usefixtures("committed")

# Revoking the caller's own session would leave the rest of the run unauthenticated: these go
# last, in a run of their own.
LOGOUT_PATHS = "^/auth/logout"
RUN_TIMEOUT_S = 540


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _get(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (a local http URL)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The app under uvicorn on the test database; its base URL."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port), "--no-access-log"],
        cwd=ROOT_DIR,
        env={**os.environ, "APP_ENV": "test", **database_env(config.database.url)},
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(f"{base_url}/health") == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, "the server stopped"
            assert time.monotonic() < deadline, "the server did not start within 60 s"
            time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _token(base_url: str, email: str) -> str:
    form = f"username={email}&password={PASSWORD}".replace("@", "%40").encode()
    request = urllib.request.Request(f"{base_url}/auth/token", data=form)  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        token: str = json.load(response)["access_token"]
        return token


def _credentials(base_url: str, world: World, identity: str) -> tuple[dict[str, str], str]:
    """The headers that authenticate as `identity`, and the config lines that do it."""
    role, _, way = identity.partition("-")
    if way == "api-key":
        # OpenAPI-aware: sent only where the document declares the key, so that the key-less
        # routes are tried without it, and `ignored_auth` knows it is a real credential.
        key = world.api_keys[role]
        return {"X-API-Key": key}, f'[auth.openapi.ApiKey]\napi_key = "{key}"\n'
    return {"Authorization": f"Bearer {_token(base_url, world.emails[role])}"}, ""


def _config(directory: Path, auth_lines: str) -> Path:
    path = directory / "schemathesis.toml"
    path.write_text(
        "[checks.positive_data_acceptance]\n"
        # Schema-valid input may still be refused by rules the schema cannot state.
        f"expected-statuses = {json.dumps(VALID_INPUT_STATUSES)}\n"
        "[generation]\n"
        # The caller's credentials are the run's; generated ones next to them would win.
        "with-security-parameters = false\n" + auth_lines
    )
    return path


def _campaign(
    base_url: str, config_file: Path, headers: dict[str, str], *filters: str
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in the config's directory, where it keeps its cache: each run starts afresh."""
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config_file)]
    command += ["run", f"{base_url}/openapi.json", "--phases", "examples,coverage"]
    command += ["--checks", "all", "--workers", "1", "--seed", "16", *filters]
    if "Authorization" in headers:
        command += ["--header", f"Authorization: {headers['Authorization']}"]
    return subprocess.run(
        command, cwd=config_file.parent, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )


def _report(result: subprocess.CompletedProcess[str]) -> str:
    return f"schemathesis exited with {result.returncode}\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("identity", IDENTITIES)
def test_campaign(server: str, tmp_path: Path, identity: str) -> None:
    empty_database()
    world = make_world()
    headers, auth_lines = _credentials(server, world, identity)
    result = _campaign(
        server, _config(tmp_path, auth_lines), headers, "--exclude-path-regex", LOGOUT_PATHS
    )
    assert result.returncode == 0, _report(result)
    assert "Coverage" in result.stdout
    # The caller was still itself at the end: no request locked it out halfway.
    assert _get(f"{server}/users/me", headers) == 200


@pytest.mark.parametrize("identity", ["admin-bearer", "client-bearer"])
def test_campaign_on_logout(server: str, tmp_path: Path, identity: str) -> None:
    empty_database()
    world = make_world()
    headers, auth_lines = _credentials(server, world, identity)
    result = _campaign(
        server, _config(tmp_path, auth_lines), headers, "--include-path-regex", LOGOUT_PATHS
    )
    assert result.returncode == 0, _report(result)
