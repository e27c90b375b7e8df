"""Secrets from AWS Secrets Manager, read once when the application is configured.

The standard library does it: one HTTPS request signed with Signature Version 4, with the
function's credentials from Lambda's variables or, where Lambda gives none there (SnapStart),
from its credentials endpoint, as the AWS SDKs' container credential provider reads them.
Importing boto3 and making a client costs a cold start about three times what this does
(README, "Deploying to AWS Lambda"), and a container image cannot use the Parameters and
Secrets Lambda extension, which ships as a layer.
"""

import hashlib
import hmac
import http.client
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from config.settings import SecretSources

SERVICE = "secretsmanager"


class SecretsError(Exception):
    """A secret could not be read; the message names it and says why."""


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


def sign(
    *,
    method: str,
    host: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    region: str,
    service: str,
    credentials: Credentials,
    now: datetime,
) -> dict[str, str]:
    """`headers` plus those that sign the request (AWS Signature Version 4, no query string)."""
    amz_date = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    signed = {name.lower(): " ".join(value.split()) for name, value in headers.items()}
    signed |= {"host": host, "x-amz-date": amz_date}
    if credentials.session_token:
        signed["x-amz-security-token"] = credentials.session_token
    names = sorted(signed)
    signed_headers = ";".join(names)
    canonical_request = "\n".join(
        [
            method,
            path,
            "",
            "".join(f"{name}:{signed[name]}\n" for name in names),
            signed_headers,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{credentials.secret_access_key}".encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    signed["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return signed


def get_secret_string(
    secret_id: str,
    *,
    region: str,
    credentials: Credentials,
    endpoint_url: str | None = None,
    timeout_s: float = 5,
) -> str:
    endpoint = urlsplit(endpoint_url or f"https://{SERVICE}.{region}.amazonaws.com")
    if endpoint.scheme not in {"https", "http"} or not endpoint.hostname:
        raise SecretsError(f"not an http(s) endpoint for Secrets Manager: {endpoint_url!r}")
    body = json.dumps({"SecretId": secret_id}).encode()
    headers = sign(
        method="POST",
        host=endpoint.netloc,
        path="/",
        headers={
            "content-type": "application/x-amz-json-1.1",
            "x-amz-target": "secretsmanager.GetSecretValue",
        },
        body=body,
        region=region,
        service=SERVICE,
        credentials=credentials,
        now=datetime.now(UTC),
    )
    connection_class = (
        http.client.HTTPSConnection if endpoint.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(endpoint.hostname, endpoint.port, timeout=timeout_s)
    try:
        connection.request("POST", "/", body=body, headers=headers)
        response = connection.getresponse()
        status, payload = response.status, response.read()
    except OSError as error:
        raise SecretsError(f"cannot reach Secrets Manager for {secret_id}: {error}") from None
    finally:
        connection.close()
    answer = _json_object(payload)
    if status != 200:
        kind = str(answer.get("__type", "")).rpartition("#")[2] or f"HTTP {status}"
        message = answer.get("message") or answer.get("Message") or ""
        raise SecretsError(f"cannot read secret {secret_id}: {kind} {message}".rstrip())
    secret = answer.get("SecretString")
    if not isinstance(secret, str):
        raise SecretsError(f"secret {secret_id} holds no text (SecretString)")
    return secret


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def fetch_secret_settings(sources: SecretSources) -> dict[str, Any]:
    """The settings the configured secrets hold, by field name."""
    values: dict[str, Any] = {}
    if sources.secret_key_secret_id is not None:
        values["secret_key"] = _read(sources, sources.secret_key_secret_id)
    if sources.webhook_secret_keys_secret_id is not None:
        values["webhook_secret_keys"] = _read(sources, sources.webhook_secret_keys_secret_id)
    if sources.database_secret_id is not None:
        values["postgres_user"], values["postgres_password"] = read_database_login(sources)
    return values


def read_database_login(sources: SecretSources) -> tuple[str, str]:
    """The user name and password the database secret holds now."""
    secret_id = str(sources.database_secret_id)
    login = _json_object(_read(sources, secret_id).encode())
    if not isinstance(login.get("username"), str) or not isinstance(login.get("password"), str):
        raise SecretsError(f"secret {secret_id} is not JSON with a username and a password")
    return login["username"], login["password"]


def _read(sources: SecretSources, secret_id: str) -> str:
    if not sources.aws_region:
        raise SecretsError("reading secrets needs AWS_REGION (Lambda sets it)")
    return get_secret_string(
        secret_id,
        region=str(sources.aws_region),
        credentials=function_credentials(sources),
        endpoint_url=sources.aws_endpoint_url_secrets_manager,
    )


def function_credentials(sources: SecretSources) -> Credentials:
    """The function's credentials: Lambda's variables, else (SnapStart) its endpoint's, read
    anew at each call, so that an instance restored from a snapshot never uses old ones."""
    if sources.aws_access_key_id and sources.aws_secret_access_key:
        return Credentials(
            access_key_id=sources.aws_access_key_id,
            secret_access_key=sources.aws_secret_access_key.get_secret_value(),
            session_token=(
                sources.aws_session_token.get_secret_value() if sources.aws_session_token else None
            ),
        )
    if sources.aws_container_credentials_full_uri:
        token = sources.aws_container_authorization_token
        return container_credentials(
            sources.aws_container_credentials_full_uri,
            token.get_secret_value() if token else None,
        )
    raise SecretsError(
        "reading secrets needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or (SnapStart) "
        "AWS_CONTAINER_CREDENTIALS_FULL_URI (Lambda sets them)"
    )


def container_credentials(
    uri: str, authorization: str | None, *, timeout_s: float = 2
) -> Credentials:
    """Credentials from a container credentials endpoint (JSON with AccessKeyId,
    SecretAccessKey and Token)."""
    endpoint = urlsplit(uri)
    if endpoint.scheme not in {"https", "http"} or not endpoint.hostname:
        raise SecretsError(f"not an http(s) credentials endpoint: {uri!r}")
    connection_class = (
        http.client.HTTPSConnection if endpoint.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(endpoint.hostname, endpoint.port, timeout=timeout_s)
    path = endpoint.path or "/"
    if endpoint.query:
        path = f"{path}?{endpoint.query}"
    try:
        connection.request("GET", path, headers={"Authorization": authorization or ""})
        response = connection.getresponse()
        status, payload = response.status, response.read()
    except OSError as error:
        raise SecretsError(f"cannot reach the credentials endpoint: {error}") from None
    finally:
        connection.close()
    answer = _json_object(payload)
    key_id, secret, token = (
        answer.get(name) for name in ("AccessKeyId", "SecretAccessKey", "Token")
    )
    if status != 200 or not isinstance(key_id, str) or not isinstance(secret, str):
        raise SecretsError(f"the credentials endpoint answered HTTP {status} without credentials")
    return Credentials(key_id, secret, token if isinstance(token, str) else None)
