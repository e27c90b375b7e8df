"""A Lambda Runtime API on loopback, to run a handler the way Lambda runs it: in a process of its
own, through the runtime interface client (`python -m awslambdaric HANDLER`, which is what the
AWS base image's entry point runs with the image's CMD).

The server hands the events it is given to the function one `next` request at a time, and
keeps what the function sends back: a response, an invocation error, or an init error (or,
under SnapStart, once the function asked to be restored, a restore error). It
notes when each arrives, so that the init phase (process start to the first `next`, as Lambda
counts it) and each invocation (event handed out to answer received) can be timed.

Used by the tests (tests/entrypoint/test_runtime_client.py) and `benchmarks.coldstart`.
"""

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any

from root import ROOT_DIR

API_PREFIX = "/2018-06-01/runtime"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
FUNCTION_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:tracker-api"


@dataclass(frozen=True)
class Answer:
    """What the function sent back for an invocation, or for its init phase."""

    # "response", "error" (the invocation failed), "init-error" or "restore-error"
    kind: str
    request_id: str | None
    body: Any
    error_type: str | None
    # time.perf_counter() when the event was handed out (None for an init error) and when the
    # answer arrived.
    handed_out_at: float | None
    received_at: float

    @property
    def duration_ms(self) -> float:
        assert self.handed_out_at is not None
        return (self.received_at - self.handed_out_at) * 1000


class RuntimeApi:
    """The Runtime API's endpoints for one function instance, served on 127.0.0.1."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.answers: queue.Queue[Answer] = queue.Queue()
        self.first_next_at: float | None = None
        # Under SnapStart: when the function, its init done, waited for the snapshot's restore.
        self.restore_next_at: float | None = None
        self.handed_out: dict[str, float] = {}
        self.stopping = threading.Event()
        runtime = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == f"{API_PREFIX}/restore/next":
                    # The snapshot is taken here; this one is restored at once.
                    runtime.restore_next_at = time.perf_counter()
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path != f"{API_PREFIX}/invocation/next":
                    self.send_error(404)
                    return
                if runtime.first_next_at is None:
                    runtime.first_next_at = time.perf_counter()
                while not runtime.stopping.is_set():
                    try:
                        request_id, event = runtime.events.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    body = json.dumps(event).encode()
                    runtime.handed_out[request_id] = time.perf_counter()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
                    deadline_ms = int(time.time() * 1000) + 30_000
                    self.send_header("Lambda-Runtime-Deadline-Ms", str(deadline_ms))
                    self.send_header("Lambda-Runtime-Invoked-Function-Arn", FUNCTION_ARN)
                    self.send_header("Lambda-Runtime-Trace-Id", f"Root=1-{uuid.uuid4().hex[:8]}")
                    self.end_headers()
                    self.wfile.write(body)
                    return

            def do_POST(self) -> None:
                received_at = time.perf_counter()
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                body = json.loads(raw) if raw else None
                parts = self.path.removeprefix(f"{API_PREFIX}/").split("/")
                error_type = self.headers.get(ERROR_TYPE_HEADER)
                if parts in (["init", "error"], ["restore", "error"]):
                    kind = f"{parts[0]}-error"
                    answer = Answer(kind, None, body, error_type, None, received_at)
                elif (
                    len(parts) == 3
                    and parts[0] == "invocation"
                    and parts[2]
                    in {
                        "response",
                        "error",
                    }
                ):
                    request_id = parts[1]
                    answer = Answer(
                        parts[2],
                        request_id,
                        body,
                        error_type,
                        runtime.handed_out.get(request_id),
                        received_at,
                    )
                else:
                    self.send_error(404)
                    return
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                runtime.answers.put(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"

    def invoke(self, event: Any, *, timeout: float = 60) -> Answer:
        """Hand `event` to the function at its next `next` and wait for its answer."""
        self.events.put((str(uuid.uuid4()), event))
        return self.answers.get(timeout=timeout)

    def init_error(self, *, timeout: float = 60) -> Answer:
        """Wait for what the function sends instead of asking for its first event."""
        return self.answers.get(timeout=timeout)

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Function:
    """A function instance: its process, and the Runtime API it reports to."""

    process: subprocess.Popen[bytes]
    runtime: RuntimeApi
    started_at: float
    log: IO[bytes]

    @property
    def init_ms(self) -> float | None:
        """Process start to the first `next` request: the init phase as Lambda counts it."""
        if self.runtime.first_next_at is None:
            return None
        return (self.runtime.first_next_at - self.started_at) * 1000

    def wait_until_ready(self, *, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.runtime.first_next_at is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the function never asked for an event: {self.output()}")
            time.sleep(0.002)

    def cpu_ms(self) -> float:
        """The CPU time the process has used so far (in clock ticks of 10 ms, on Linux)."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")

    def output(self) -> str:
        """What the process has written so far (its log)."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


@contextmanager
def running_function(handler: str, env: Mapping[str, str]) -> Iterator[Function]:
    """Start `python -m awslambdaric HANDLER` in the project root with the environment `env`
    (and Lambda's own variables), reporting to a Runtime API of its own; stop it afterwards."""
    runtime = RuntimeApi()
    lambda_env = {
        "AWS_LAMBDA_RUNTIME_API": runtime.address,
        "AWS_LAMBDA_FUNCTION_NAME": "tracker-api",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/tracker-api",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/12/07/[$LATEST]0123456789abcdef",
        "AWS_REGION": "eu-west-1",
        "PATH": os.environ.get("PATH", ""),
    }
    with tempfile.TemporaryFile() as log:
        started_at = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "awslambdaric", handler],
            cwd=ROOT_DIR,
            env={**lambda_env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield Function(process, runtime, started_at, log)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            runtime.close()
