"""AWS Lambda events as API Gateway sends them, and reading the handler's answers."""

import base64
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mangum.types import LambdaCognitoIdentity, LambdaMobileClientContext


@dataclass
class LambdaContext:
    """The attributes of the Lambda runtime's context object that the app may read."""

    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_name: str = "tracker-api"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:tracker-api"
    log_group_name: str = "/aws/lambda/tracker-api"
    log_stream_name: str = "2026/11/26/[$LATEST]0123456789abcdef"
    identity: LambdaCognitoIdentity | None = None
    client_context: LambdaMobileClientContext | None = None

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def _encode_body(body: Any) -> tuple[str | None, dict[str, str]]:
    if body is None:
        return None, {}
    return json.dumps(body), {"content-type": "application/json"}


def rest_event(
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: Any = None,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway REST API (payload format 1.0) proxy event."""
    raw_body, body_headers = _encode_body(body)
    all_headers = {
        "Host": "abc123.execute-api.eu-west-1.amazonaws.com",
        "User-Agent": "pytest",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-For": "203.0.113.7",
        **body_headers,
        **(headers or {}),
    }
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {key: [value] for key, value in all_headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": (
            {key: [value] for key, value in query.items()} if query else None
        ),
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc123",
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "requestId": str(uuid.uuid4()),
            "accountId": "123456789012",
            "apiId": "abc123",
            "protocol": "HTTP/1.1",
            "requestTimeEpoch": 1_700_000_000_000,
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "pytest"},
        },
        "body": raw_body,
        "isBase64Encoded": False,
    }


def http_api_event(
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    cookies: list[str] | None = None,
    body: Any = None,
    query: str = "",
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event."""
    raw_body, body_headers = _encode_body(body)
    all_headers = {
        "host": "abc123.execute-api.eu-west-1.amazonaws.com",
        "user-agent": "pytest",
        "x-forwarded-proto": "https",
        "x-forwarded-for": "203.0.113.7",
        **body_headers,
        **{key.lower(): value for key, value in (headers or {}).items()},
    }
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": all_headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "pytest",
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": "26/Nov/2026:12:00:00 +0000",
            "timeEpoch": 1_700_000_000_000,
        },
        "body": raw_body,
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    return event


def response_json(response: dict[str, Any]) -> Any:
    body = response["body"]
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return json.loads(body)


def response_headers(response: dict[str, Any]) -> dict[str, list[str]]:
    """A Lambda response's headers, single- and multi-valued, by lower-case name."""
    merged: dict[str, list[str]] = {}
    for name, value in response.get("headers", {}).items():
        merged.setdefault(name.lower(), []).append(value)
    for name, values in response.get("multiValueHeaders", {}).items():
        merged.setdefault(name.lower(), []).extend(values)
    return merged


def scheduler_event(task: str) -> dict[str, Any]:
    """What EventBridge Scheduler sends: the schedule's input, its placeholders filled in."""
    return {
        "task": task,
        "scheduleArn": "arn:aws:scheduler:eu-west-1:123456789012:schedule/default/tracker-auth",
        "scheduledTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def scheduled_event(rule: str) -> dict[str, Any]:
    """What an EventBridge rule with a schedule sends when it has no input of its own."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "eu-west-1",
        "resources": [f"arn:aws:events:eu-west-1:123456789012:rule/{rule}"],
        "detail": {},
    }
