"""For benchmarks.ingest: events sent one at a time through the Lambda handler, in this process.

    python -m benchmarks.lambda_event API_KEY < "JOB_ID STEP EVENT_ID" lines

The app configures itself at import from the environment (the caller sets the database and
LAMBDA_MODE). After a warm-up of a tenth, prints the median milliseconds per event, elapsed and
CPU, and the threads started per event (every `threading.Thread` start is counted).
"""

import json
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any


def http_api_event(
    method: str, path: str, body: dict[str, Any] | None, api_key: str
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) request."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "host": "bench.execute-api.eu-west-1.amazonaws.com",
            "x-api-key": api_key,
            "x-forwarded-proto": "https",
            **({"content-type": "application/json"} if body is not None else {}),
        },
        "requestContext": {
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "1.2.3.4"},
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
        },
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


def count_thread_starts() -> Callable[[], int]:
    """From now on, count the threads this process starts; returns the counter's reader."""
    started = 0
    start = threading.Thread.start

    def counted_start(thread: threading.Thread) -> None:
        nonlocal started
        started += 1
        start(thread)

    threading.Thread.start = counted_start  # type: ignore[method-assign,assignment]
    return lambda: started


def main() -> None:
    api_key = sys.argv[1]
    from app.main import handler

    threads_started = count_thread_starts()
    planned = [line.split() for line in sys.stdin.read().splitlines() if line.strip()]
    warm_up = len(planned) // 10
    timings: list[tuple[float, float]] = []
    threads_after_warm_up = 0
    for index, (job_id, step, event_id) in enumerate(planned):
        if index == warm_up:
            threads_after_warm_up = threads_started()
        body = {"kind": "step", "name": step, "event_id": event_id}
        event = http_api_event("POST", f"/jobs/{job_id}/events", body, api_key)
        context = SimpleNamespace(aws_request_id=str(uuid.uuid4()), function_name="bench")
        started, cpu = time.perf_counter(), time.process_time()
        answer = handler(event, context)
        timings.append((time.perf_counter() - started, time.process_time() - cpu))
        if answer["statusCode"] != 201:
            raise SystemExit(f"the handler answered {answer['statusCode']}: {answer['body']}")
    measured = timings[warm_up:]
    elapsed_ms = statistics.median(elapsed for elapsed, _ in measured) * 1000
    cpu_ms = statistics.median(cpu for _, cpu in measured) * 1000
    threads = (threads_started() - threads_after_warm_up) / len(measured)
    print(f"{elapsed_ms:.3f} {cpu_ms:.3f} {threads:.2f}")


if __name__ == "__main__":
    main()
