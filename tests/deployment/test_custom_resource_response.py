"""The migrations custom resource answers only to a URL CloudFormation could have given (HTTPS on
an AWS host), and gives up on an unreachable one without waiting after its last try."""

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app import deploy
from tests.helpers.capture import captured_records


@pytest.mark.parametrize(
    "url",
    [
        "https://cloudformation-custom-resource-response-euwest1.s3.eu-west-1.amazonaws.com"
        "/arn%3Aaws%3Acloudformation/req?X-Amz-Signature=abc",
        "https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/x",
        "https://cloudformation-custom-resource-response-cnnorth1.s3.cn-north-1.amazonaws.com.cn/x",
        "HTTPS://BUCKET.S3.AMAZONAWS.COM/x",
    ],
)
def test_a_presigned_s3_url_is_answered(url: str) -> None:
    assert deploy.response_url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://bucket.s3.amazonaws.com/x", "scheme"),
        ("ftp://bucket.s3.amazonaws.com/x", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("", "scheme"),
        ("https://example.com/x", "host"),
        ("https://amazonaws.com.example.com/x", "host"),
        ("https://evilamazonaws.com/x", "host"),
        ("https://bucket.s3.amazonaws.com@example.com/x", "host"),
        ("https://bucket.s3.amazonaws.com.example.com/x", "host"),
        ("https://169.254.169.254/latest/meta-data", "host"),
        ("https://bucket.s3.amazonaws.com:port/x", "not a URL"),
    ],
)
def test_any_other_url_is_refused_with_the_reason(url: str, problem: str) -> None:
    reason = deploy.response_url_problem(url)
    assert reason is not None
    assert problem in reason


class Receiver:
    """A local HTTP server that records every PUT it gets."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        host, port = self.server.server_address[:2]
        self.url = f"http://{host!s}:{port}/response?X-Amz-Signature=abc"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def delete_event(response_url: str) -> dict[str, Any]:
    # Delete changes nothing, so the answer is all that happens.
    return {
        "RequestType": "Delete",
        "ResponseURL": response_url,
        "StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/tracker/0a1b2c3d",
        "RequestId": "5d2c8f1e-0000-4000-8000-000000000001",
        "LogicalResourceId": "Migrations",
        "PhysicalResourceId": "Migrations",
        "ResourceType": "Custom::Migrations",
    }


def test_a_url_not_on_aws_gets_no_answer_and_an_error_in_the_log(receiver: Receiver) -> None:
    with captured_records("tracker.deploy") as records:
        answer = deploy.handle_custom_resource(delete_event(receiver.url), None)
    assert answer["Status"] == "SUCCESS"
    assert receiver.bodies == []
    [error] = [record for record in records if record.levelname == "ERROR"]
    assert "scheme must be https" in error.getMessage()


def test_the_same_url_is_answered_once_its_host_is_trusted(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The refusal above is the URL check's doing, not the receiver's.
    monkeypatch.setattr(deploy, "RESPONSE_URL_SCHEMES", frozenset({"http"}))
    monkeypatch.setattr(deploy, "RESPONSE_URL_HOST_SUFFIXES", ("127.0.0.1",))
    deploy.handle_custom_resource(delete_event(receiver.url), None)
    [body] = receiver.bodies
    assert body["Status"] == "SUCCESS"
    assert body["RequestId"] == "5d2c8f1e-0000-4000-8000-000000000001"


def test_an_unreachable_url_is_tried_each_time_with_no_wait_after_the_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    # Nothing listens on that port now: each try is refused at once.
    monkeypatch.setattr(deploy, "RESPONSE_URL_SCHEMES", frozenset({"http"}))
    monkeypatch.setattr(deploy, "RESPONSE_URL_HOST_SUFFIXES", ("127.0.0.1",))
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    with captured_records("tracker.deploy") as records:
        deploy.handle_custom_resource(delete_event(f"http://127.0.0.1:{port}/response"), None)
    tries = [record for record in records if "failed (try" in record.getMessage()]
    assert len(tries) == deploy.RESPONSE_ATTEMPTS
    assert len(waits) == deploy.RESPONSE_ATTEMPTS - 1
    assert "could not be sent" in records[-1].getMessage()
