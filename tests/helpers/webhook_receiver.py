"""A real HTTP receiver for webhook tests: it records every request, answers the status codes
it is told to, and can be stopped (nothing listens) and started again on the same port.

Signatures are checked here with the standard library only, as a receiver would check them
from the Standard Webhooks specification, not with the app's own signing code."""

import base64
import hashlib
import hmac
import json
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def signed_by(self, secret: str) -> bool:
        """Whether one of the v1 signatures is HMAC-SHA256 of "id.timestamp.body" under the
        base64 key after `whsec_`."""
        key = base64.b64decode(secret.removeprefix("whsec_"))
        content = (
            f"{self.headers['webhook-id']}.{self.headers['webhook-timestamp']}.".encode()
            + self.body
        )
        expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
        for entry in self.headers["webhook-signature"].split(" "):
            version, _, value = entry.partition(",")
            if version == "v1" and hmac.compare_digest(value, expected):
                return True
        return False


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.answers: deque[int] = deque()  # status codes to answer, then 200
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                receiver.requests.append(Received(self.path, headers, body))
                code = receiver.answers.popleft() if receiver.answers else 200
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Nothing listens on the port until `start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
