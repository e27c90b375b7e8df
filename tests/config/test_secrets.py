"""Secrets from AWS Secrets Manager, read with the standard library: the request is signed as
botocore signs it, and production settings take their secrets from it."""

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotocoreCredentials

from config.secrets import Credentials, sign
from tests.helpers.processes import run_python

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE//////////TOKEN"


@pytest.mark.parametrize("session_token", [SESSION_TOKEN, None])
def test_the_signature_is_the_one_botocore_computes(session_token: str | None) -> None:
    body = json.dumps({"SecretId": "tracker/secret-key"}).encode()
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "secretsmanager.GetSecretValue",
    }
    reference = AWSRequest(
        method="POST",
        url="https://secretsmanager.eu-west-1.amazonaws.com/",
        data=body,
        headers=headers,
    )
    SigV4Auth(
        BotocoreCredentials(ACCESS_KEY, SECRET_ACCESS_KEY, session_token),
        "secretsmanager",
        "eu-west-1",
    ).add_auth(reference)
    signed_at = datetime.strptime(reference.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    ours = sign(
        method="POST",
        host="secretsmanager.eu-west-1.amazonaws.com",
        path="/",
        headers=headers,
        body=body,
        region="eu-west-1",
        service="secretsmanager",
        credentials=Credentials(ACCESS_KEY, SECRET_ACCESS_KEY, session_token),
        now=signed_at.replace(tzinfo=UTC),
    )
    assert ours["authorization"] == reference.headers["Authorization"]
    assert ours.get("x-amz-security-token") == session_token


class FakeSecretsManager:
    """Answers GetSecretValue from a dict, as Secrets Manager's JSON protocol does."""

    def __init__(self, secrets: dict[str, str]) -> None:
        requests: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                requests.append({"headers": dict(self.headers), "body": payload})
                secret = secrets.get(payload["SecretId"])
                if secret is None:
                    status, answer = (
                        400,
                        {
                            "__type": "ResourceNotFoundException",
                            "message": "Secrets Manager can't find the specified secret.",
                        },
                    )
                else:
                    status, answer = 200, {"Name": payload["SecretId"], "SecretString": secret}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.requests = requests
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        host, port = self.server.server_address[:2]
        self.url = f"http://{host!s}:{port}"


@pytest.fixture
def secrets_manager() -> Iterator[FakeSecretsManager]:
    fake = FakeSecretsManager(
        {
            "tracker/secret-key": "k" * 48,
            "tracker/webhook-secret-keys": f"{'n' * 40},{'o' * 40}",
            "tracker/database": json.dumps({"username": "tracker_app", "password": "p@ss:w/rd"}),
        }
    )
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


def production_env(fake: FakeSecretsManager, **overrides: str | None) -> dict[str, str | None]:
    return {
        "APP_ENV": "production",
        # The test run's own database would win over the secret's login.
        "DATABASE_URL": None,
        "SECRET_KEY_SECRET_ID": "tracker/secret-key",
        "WEBHOOK_SECRET_KEYS_SECRET_ID": "tracker/webhook-secret-keys",
        "DATABASE_SECRET_ID": "tracker/database",
        "POSTGRES_HOST": "tracker-proxy.proxy-abc.eu-west-1.rds.amazonaws.com",
        "POSTGRES_DB": "tracker",
        "POSTGRES_SSLMODE": "require",
        "AWS_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": fake.url,
        **overrides,
    }


SHOW_CONFIG = (
    "from config import config\n"
    "config.setup()\n"
    "url = config.database.url\n"
    "print(config.settings.secret_key.get_secret_value(), url.username, url.password, url.host,\n"
    "      url.query['sslmode'],\n"
    "      *(key.get_secret_value() for key in config.settings.webhook_secret_keys))\n"
)


def test_production_takes_its_keys_and_database_login_from_secrets_manager(
    secrets_manager: FakeSecretsManager,
) -> None:
    result = run_python("-c", SHOW_CONFIG, env=production_env(secrets_manager))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "k" * 48,
        "tracker_app",
        "p@ss:w/rd",
        "tracker-proxy.proxy-abc.eu-west-1.rds.amazonaws.com",
        "require",
        "n" * 40,
        "o" * 40,
    ]
    assert [request["body"]["SecretId"] for request in secrets_manager.requests] == [
        "tracker/secret-key",
        "tracker/webhook-secret-keys",
        "tracker/database",
    ]
    for request in secrets_manager.requests:
        headers = {name.lower(): value for name, value in request["headers"].items()}
        assert headers["x-amz-target"] == "secretsmanager.GetSecretValue"
        assert headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
        assert "/eu-west-1/secretsmanager/aws4_request" in headers["authorization"]
        assert headers["x-amz-security-token"] == SESSION_TOKEN


def test_a_missing_secret_stops_the_start_with_its_name_and_the_reason(
    secrets_manager: FakeSecretsManager,
) -> None:
    env = production_env(secrets_manager, SECRET_KEY_SECRET_ID="tracker/nope")
    result = run_python("-c", SHOW_CONFIG, env=env)
    assert result.returncode != 0
    assert "cannot read secret tracker/nope: ResourceNotFoundException" in result.stderr


def test_a_secret_without_credentials_to_read_it_is_a_clear_error(
    secrets_manager: FakeSecretsManager,
) -> None:
    env = production_env(secrets_manager, AWS_ACCESS_KEY_ID="")
    result = run_python("-c", SHOW_CONFIG, env=env)
    assert result.returncode != 0
    assert "reading secrets needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in result.stderr
    assert "AWS_CONTAINER_CREDENTIALS_FULL_URI" in result.stderr


class FakeCredentialsEndpoint:
    """Lambda's credentials endpoint under SnapStart: the function's credentials as JSON, to a
    request that carries the authorization token."""

    TOKEN = "container-authorization-token"

    def __init__(self) -> None:
        requests: list[dict[str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append({"path": self.path, **dict(self.headers)})
                if self.headers.get("Authorization") != FakeCredentialsEndpoint.TOKEN:
                    status, answer = 401, {"message": "bad token"}
                else:
                    status, answer = (
                        200,
                        {
                            "AccessKeyId": "ASIACONTAINEREXAMPLE",
                            "SecretAccessKey": SECRET_ACCESS_KEY,
                            "Token": "container-session-token",
                            "Expiration": "2026-12-07T18:00:00Z",
                        },
                    )
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.requests = requests
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        host, port = self.server.server_address[:2]
        self.url = f"http://{host!s}:{port}/2021-04-23/functions/tracker-api/credentials"


@pytest.fixture
def credentials_endpoint() -> Iterator[FakeCredentialsEndpoint]:
    fake = FakeCredentialsEndpoint()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


def snapstart_env(
    secrets_manager: FakeSecretsManager, endpoint: FakeCredentialsEndpoint, token: str
) -> dict[str, str | None]:
    # Under SnapStart, Lambda sets no credentials in variables, only the endpoint's.
    return production_env(
        secrets_manager,
        AWS_ACCESS_KEY_ID=None,
        AWS_SECRET_ACCESS_KEY=None,
        AWS_SESSION_TOKEN=None,
        AWS_CONTAINER_CREDENTIALS_FULL_URI=endpoint.url,
        AWS_CONTAINER_AUTHORIZATION_TOKEN=token,
    )


def test_under_snapstart_the_credentials_come_from_lambda_s_endpoint(
    secrets_manager: FakeSecretsManager, credentials_endpoint: FakeCredentialsEndpoint
) -> None:
    env = snapstart_env(secrets_manager, credentials_endpoint, FakeCredentialsEndpoint.TOKEN)
    result = run_python("-c", SHOW_CONFIG, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:3] == ["k" * 48, "tracker_app", "p@ss:w/rd"]
    assert len(secrets_manager.requests) == 3  # SECRET_KEY, the database's, the webhook keys
    assert [request["path"] for request in credentials_endpoint.requests] == [
        "/2021-04-23/functions/tracker-api/credentials"
    ] * 3  # read anew for each secret
    for request in secrets_manager.requests:
        headers = {name.lower(): value for name, value in request["headers"].items()}
        assert "Credential=ASIACONTAINEREXAMPLE/" in headers["authorization"]
        assert headers["x-amz-security-token"] == "container-session-token"


def test_a_refused_credentials_request_is_a_clear_error(
    secrets_manager: FakeSecretsManager, credentials_endpoint: FakeCredentialsEndpoint
) -> None:
    env = snapstart_env(secrets_manager, credentials_endpoint, "wrong-token")
    result = run_python("-c", SHOW_CONFIG, env=env)
    assert result.returncode != 0
    assert "the credentials endpoint answered HTTP 401 without credentials" in result.stderr
    assert secrets_manager.requests == []
