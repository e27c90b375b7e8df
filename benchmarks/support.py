"""What the benchmarks share: a scratch database on a local PostgreSQL server, migrated; the app
served by uvicorn; a proxy that counts round trips and sessions; percentiles."""

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import httpx2 as httpx
import psycopg2
from sqlalchemy.engine import URL, make_url

from config import database as databases
from root import ROOT_DIR, root_path

DEFAULT_MAINTENANCE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCALHOST = "127.0.0.1"


def is_local(url: URL) -> bool:
    """Whether every host the URL names is 127.0.0.1 or a Unix socket directory."""
    socket_dirs = url.query.get("host")
    hosts = [url.host, *((socket_dirs,) if isinstance(socket_dirs, str) else socket_dirs or ())]
    named = [host for host in hosts if host]
    return bool(named) and all(host == LOCALHOST or host.startswith("/") for host in named)


def connect_params(url: URL) -> dict[str, Any]:
    """psycopg2.connect() arguments for a SQLAlchemy URL (Unix sockets come as ?host=/dir)."""
    params: dict[str, Any] = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
        **url.query,
    }
    return {
        **{key: value for key, value in params.items() if value},
        "application_name": "tracker-bench",
        "connect_timeout": 5,
    }


@contextlib.contextmanager
def connection(url: URL, *, autocommit: bool = False) -> Iterator[Any]:
    conn = psycopg2.connect(**connect_params(url))
    try:
        conn.autocommit = autocommit
        yield conn
    finally:
        conn.close()


def maintenance_url(given: str | None) -> URL:
    """The given server, else the machine's PostgreSQL, else the embedded one."""
    url = make_url(given or DEFAULT_MAINTENANCE_URL)
    if given is not None:
        return url
    try:
        with connection(url, autocommit=True):
            return url
    except psycopg2.OperationalError as error:
        reason = str(error).strip().splitlines()[0]
        print(f"{DEFAULT_MAINTENANCE_URL} is unreachable ({reason}); using the embedded server")
    from config.embedded import embedded_database_url

    return embedded_database_url(root_path(".data/postgres"), "postgres")


def add_database_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help=f"maintenance connection (default: {DEFAULT_MAINTENANCE_URL}, else the embedded one)",
    )


def local_maintenance(parser: argparse.ArgumentParser, given: str | None) -> URL:
    """The maintenance connection of --database-url (psycopg2, as the app ships), which must be
    a server on this machine (its processes' CPU time is read); prints which server it is."""
    maintenance = maintenance_url(given).set(drivername="postgresql+psycopg2")
    if not is_local(maintenance):
        parser.error("the database must be at 127.0.0.1 or behind a Unix socket (?host=/dir)")
    print(describe_server(maintenance))
    return maintenance


def database_exists(maintenance: URL, name: str) -> bool:
    with connection(maintenance, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cursor.fetchone() is not None


def new_database(maintenance: URL, name: str, template: str | None = None) -> URL:
    """A database named `name` on the maintenance connection's server, empty or a copy of
    `template` (which no session may be using)."""
    with connection(maintenance, autocommit=True) as conn, conn.cursor() as cursor:
        clause = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
        started = time.perf_counter()
        cursor.execute(f'CREATE DATABASE "{name}"{clause}')
        if template:
            print(f"copied {template} to {name} in {time.perf_counter() - started:.0f} s")
    return maintenance.set(database=name)


def describe_server(url: URL) -> str:
    with connection(url, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = str(cursor.fetchone()[0])
    where = f"{url.host}:{url.port or 5432}" if url.host else f"socket {url.query.get('host')}"
    return f"PostgreSQL {version} at {where}"


def app_env(url: URL) -> dict[str, str]:
    return {
        **os.environ,
        "APP_ENV": "development",
        "DATABASE_URL": url.render_as_string(hide_password=False),
    }


def migrate(url: URL) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT_DIR,
        env=app_env(url),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"alembic upgrade head failed:\n{result.stdout}{result.stderr}")


@contextlib.contextmanager
def scratch_database(maintenance: URL, prefix: str = "tracker_bench") -> Iterator[URL]:
    """A new empty database on the maintenance connection's server, dropped afterwards."""
    with databases.scratch_database(maintenance, prefix=prefix) as url:
        try:
            yield url
        finally:
            print(f"dropping scratch database {url.database}")


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value at `fraction` (0.5: the median) of the sorted values, by nearest rank."""
    ordered = sorted(values)
    return ordered[round(fraction * (len(ordered) - 1))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        return int(probe.getsockname()[1])


SERVER_START_TIMEOUT_S = 60.0


def process_cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) a process of this machine has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend_cpu_seconds(url: URL, application_name: str) -> dict[int, float]:
    """The CPU time used so far by each PostgreSQL backend of `application_name` (the server
    runs on this machine), by process id; empty where /proc does not show them."""
    with connection(url, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
            " AND pid <> pg_backend_pid()",
            (application_name,),
        )
        pids = [pid for (pid,) in cursor.fetchall()]
    used = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            used[pid] = process_cpu_seconds(pid)
    return used


@dataclass(frozen=True)
class Server:
    base_url: str
    pid: int
    log: IO[bytes]
    database_url: URL

    def cpu_seconds(self) -> float:
        """The CPU time (user and system) the server process has used so far."""
        return process_cpu_seconds(self.pid)

    def backend_cpu_seconds(self) -> dict[int, float]:
        """The same for the app's database sessions (the app names them "tracker")."""
        return backend_cpu_seconds(self.database_url, "tracker")

    def warnings(self) -> list[str]:
        self.log.seek(0)
        lines = self.log.read().decode(errors="replace").splitlines()
        marks = ("WARNING", "ERROR", "CRITICAL", "Traceback")
        return [line for line in lines if any(mark in line for mark in marks)]


@contextlib.contextmanager
def serve(url: URL, app: str = "app.main:app", **settings: str) -> Iterator[Server]:
    """The app under uvicorn (one worker, as in development) on a free local port, on the
    database `url`, until the block ends; `settings` are more environment variables."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--host", LOCALHOST]
    command += ["--port", str(port), "--workers", "1", "--no-access-log"]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT_DIR,
            env={**app_env(url), **settings},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = Server(f"http://{LOCALHOST}:{port}", process.pid, log, url)
        try:
            _wait_until_ready(server, process)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_ready(server: Server, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    with httpx.Client(base_url=server.base_url, timeout=2, trust_env=False) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                server.log.seek(0)
                output = server.log.read().decode(errors="replace")
                raise RuntimeError(f"uvicorn exited with {process.returncode}:\n{output}")
            with contextlib.suppress(httpx.TransportError):
                if client.get("/health").status_code == httpx.codes.OK:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"uvicorn did not answer /health within {SERVER_START_TIMEOUT_S:.0f} s")


class CountingProxy:
    """A TCP proxy to a PostgreSQL server that counts what the driver cannot hide: the sessions
    opened through it, and the round trips (each time the client speaks after the server did,
    whatever the number of statements or packets)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server((LOCALHOST, 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self.sessions = 0
        self.round_trips = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.sessions = self.round_trips = 0

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._upstream)
            for end in (client, server):
                end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.sessions += 1
            turn = {"client_spoke_last": False}
            threading.Thread(
                target=self._pump, args=(client, server, turn, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(server, client, turn, False), daemon=True
            ).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, turn: dict[str, bool], from_client: bool
    ) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    if from_client and not turn["client_spoke_last"]:
                        self.round_trips += 1
                    turn["client_spoke_last"] = from_client
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.close()

    def url_for(self, url: URL) -> URL:
        return url.set(host=LOCALHOST, port=self.port)

    def close(self) -> None:
        self._listener.close()
