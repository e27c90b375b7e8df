"""For benchmarks.ingest: events sent one at a time through the Lambda handler, in this process.

    python -m benchmarks.lambda_event API_KEY < "JOB_ID STEP EVENT_ID" lines

The app configures itself at import from the environment (the caller sets the database and
LAMBDA_MODE). Prints the median milliseconds per event, after a warm-up of a tenth.
"""

import json
import statistics
import sys
import time
import uuid
from types import SimpleNamespace
from typing import Any


def http_api_event(path: str, body: dict[str, Any], api_key: str) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) POST."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "host": "bench.execute-api.eu-west-1.amazonaws.com",
            "content-type": "application/json",
            "x-api-key": api_key,
            "x-forwarded-proto": "https",
        },
        "requestContext": {
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "1.2.3.4"},
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
        },
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def main() -> None:
    api_key = sys.argv[1]
    from app.main import handler

    planned = [line.split() for line in sys.stdin.read().splitlines() if line.strip()]
    timings = []
    for job_id, step, event_id in planned:
        event = http_api_event(
            f"/jobs/{job_id}/events", {"kind": "step", "name": step, "event_id": event_id}, api_key
        )
        context = SimpleNamespace(aws_request_id=str(uuid.uuid4()), function_name="bench")
        started = time.perf_counter()
        answer = handler(event, context)
        timings.append(time.perf_counter() - started)
        if answer["statusCode"] != 201:
            raise SystemExit(f"the handler answered {answer['statusCode']}: {answer['body']}")
    print(f"{statistics.median(timings[len(timings) // 10 :]) * 1000:.3f}")


if __name__ == "__main__":
    main()
