"""A real HTTP receiver for webhook tests: it records every request, answers the status codes
it is told to, and can be stopped (nothing listens) and started again on the same port.

Signatures are checked here with the standard library only, as a receiver would check them
from the Standard Webhooks specification, not with the app's own signing code."""

import base64
import hashlib
import hmac
import json
import socket
import ssl
import threading
import time
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
    """Over TLS when given a server context (its certificate names the host the tests resolve
    to 127.0.0.1); `server_names` records the TLS server name each connection asked for."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Received] = []
        self.answers: deque[int] = deque()  # status codes to answer, then 200
        self.answer_headers: dict[str, str] = {}
        self.server_names: list[str | None] = []
        # Set on each request; while `hold` is given and not set, answers wait for it.
        self.arrived = threading.Event()
        self.hold: threading.Event | None = None
        self.tls = tls
        if tls is not None:
            tls.sni_callback = lambda _socket, name, _context: self.server_names.append(name)
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def url_for(self, host: str) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}/hooks"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                receiver.requests.append(Received(self.path, headers, body))
                receiver.arrived.set()
                if receiver.hold is not None:
                    receiver.hold.wait(timeout=60)
                code = receiver.answers.popleft() if receiver.answers else 200
                self.send_response(code)
                for name, value in receiver.answer_headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Nothing listens on the port until `start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class DrippingReceiver:
    """A receiver that answers one byte at a time, a byte every `interval` seconds, for as long
    as the sender listens: it never finishes its status line."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.connections = 0
        self.bytes_sent = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self.hung_up = threading.Event()  # the sender closed the connection mid-answer
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._drip, args=(connection,), daemon=True).start()

    def _drip(self, connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)  # the request's start; the rest is not waited for
            answer = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 1_000_000
            for byte in answer:
                if self._stopped.is_set():
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    self.hung_up.set()
                    return
                self.bytes_sent += 1
                time.sleep(self.interval)

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
