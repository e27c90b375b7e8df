"""The real API for client tests: uvicorn serving the app against the suite's own test database,
a TCP proxy that loses answers, and the accounts the client calls with."""

import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from app.models import Role, Scope
from config import config
from root import ROOT_DIR
from tests.helpers.factories import (
    create_api_key,
    create_configuration,
    create_user,
    unique,
)

# Generous bounds for a loaded machine: they stop a broken run, they time nothing.
START_TIMEOUT_S = 60.0
WAIT_S = 60.0
LOCALHOST = "127.0.0.1"
PIPELINE_STEPS = tuple((f"step-{n:02d}", n % 5 + 1, Decimal(f"{n}.2500")) for n in range(1, 21))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        port: int = probe.getsockname()[1]
        return port


class ApiServer:
    """uvicorn (one worker) serving the app on a port, started and stopped at will."""

    def __init__(self, database_url: str, port: int | None = None) -> None:
        self.database_url = database_url
        self.port = port or free_port()
        self.base_url = f"http://{LOCALHOST}:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", LOCALHOST]
        command += ["--port", str(self.port), "--log-level", "warning"]
        env = {**os.environ, "APP_ENV": "test", "DATABASE_URL": self.database_url}
        self._process = subprocess.Popen(command, cwd=ROOT_DIR, env=env)
        give_up = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < give_up:
            if self._process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self._process.returncode}")
            try:
                httpx.get(f"{self.base_url}/health", timeout=2)
            except httpx.TransportError:
                time.sleep(0.1)
            else:
                return
        raise RuntimeError("uvicorn did not answer in time")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None


@contextmanager
def silent_server() -> Iterator[str]:
    """The base URL of a server that takes connections and never answers: a request to it is
    in flight until its timeout."""
    with socket.create_server((LOCALHOST, 0), backlog=64) as listener:
        yield f"http://{LOCALHOST}:{listener.getsockname()[1]}"


def test_database_url() -> str:
    """The database this test run uses, as the configured test settings name it."""
    return config.database.url.render_as_string(hide_password=False)


@contextmanager
def serving(database_url: str | None = None) -> Iterator[ApiServer]:
    server = ApiServer(database_url or test_database_url())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def relay(
    client: socket.socket, upstream: socket.socket, *, lose_answer: Callable[[], bool]
) -> None:
    """Copy bytes both ways until either side closes; an answer `lose_answer` picks is thrown
    away with the connection."""
    try:
        while True:
            readable, _, _ = select.select([client, upstream], [], [], 60)
            if not readable:
                return
            for source in readable:
                data = source.recv(65536)
                if not data:
                    return
                if source is upstream and lose_answer():
                    return  # the answer is lost with the connection
                (upstream if source is client else client).sendall(data)
    except OSError:
        return
    finally:
        client.close()
        upstream.close()


class LostAnswerProxy:
    """Forwards TCP to the API; while `drop_answers` is above zero, the next answer the API
    sends is thrown away and the caller's connection cut: the request was handled (committed),
    the caller never learns it."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.drop_answers = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server((LOCALHOST, 0))
        self.port = self._listener.getsockname()[1]
        self.base_url = f"http://{LOCALHOST}:{self.port}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((LOCALHOST, self.upstream_port))
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _take_drop(self) -> bool:
        with self._lock:
            if self.drop_answers > 0:
                self.drop_answers -= 1
                self.dropped += 1
                return True
            return False

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        relay(client, upstream, lose_answer=self._take_drop)

    def close(self) -> None:
        self._closed = True
        self._listener.close()


class FaultProxy:
    """Forwards TCP to the API, except while a status is set (`fail_with`): then each request
    is read whole and answered with that status and API Gateway's body, the API never reached
    (a crashed Lambda's 500, say). `requests` lists the request line of each answered so."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.status: int | None = None
        self.requests: list[str] = []
        self._forwarding: set[socket.socket] = set()
        self._listener = socket.create_server((LOCALHOST, 0))
        self.port = self._listener.getsockname()[1]
        self.base_url = f"http://{LOCALHOST}:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        status = self.status
        if status is None:
            upstream = socket.create_connection((LOCALHOST, self.upstream_port))
            self._forwarding.add(client)
            relay(client, upstream, lose_answer=lambda: False)
            self._forwarding.discard(client)
            return
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                data = client.recv(65536)
                if not data:
                    return
                head += data
            head, _, body = head.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            while len(body) < length:
                data = client.recv(65536)
                if not data:
                    return
                body += data
            self.requests.append(lines[0])
            answer = b'{"message":"Internal server error"}'
            client.sendall(
                f"HTTP/1.1 {status} Fault\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(answer)}\r\nConnection: close\r\n\r\n".encode()
                + answer
            )

    def fail_with(self, status: int | None) -> None:
        """Answer `status` from now on (None: forward again). Forwarded connections are cut, so
        that the client's next request comes through a new one."""
        self.status = status
        for connection in list(self._forwarding):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()


@dataclass
class Account:
    """A client user of a customer with an API key, an admin with a key that may not push
    configurations and one that may (`configure`), and the 20-step pipeline configuration; all
    committed for the server to see."""

    api_key: str
    customer_id: int
    admin_email: str
    admin_key: str
    configure_key: str
    tag: str

    def reader(self, base_url: str) -> httpx.Client:
        """Plain HTTP to check what the server stored."""
        return httpx.Client(base_url=base_url, headers={"X-API-Key": self.api_key}, timeout=30)


def create_account() -> Account:
    with config.database.SessionLocal() as session:
        client = create_user(session)
        admin = create_user(session, role=Role.ADMIN)
        configuration = create_configuration(session, tag=unique("pipeline"), steps=PIPELINE_STEPS)
        account = Account(
            api_key=create_api_key(session, client),
            customer_id=client.customer_id or 0,
            admin_email=admin.email,
            admin_key=create_api_key(session, admin),
            configure_key=create_api_key(session, admin, scopes=(Scope.CONFIGURE,)),
            tag=configuration.tag,
        )
        session.commit()
    return account


def spool_path(directory: Path) -> Path:
    return directory / "spool.sqlite3"


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The `trackerapi` command in a subprocess, with only `env` (and a PATH) set."""
    return subprocess.run(
        [sys.executable, "-m", "trackerapi", *args],
        cwd=ROOT_DIR,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def server_job(account: Account, server: ApiServer, job: int | None) -> dict[str, Any]:
    with account.reader(server.base_url) as reader:
        response = reader.get(f"/jobs/{job}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def server_events(account: Account, server: ApiServer, job: int | None) -> list[dict[str, Any]]:
    with account.reader(server.base_url) as reader:
        response = reader.get(f"/jobs/{job}/events", params={"limit": 200})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items
