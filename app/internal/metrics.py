"""The application's CloudWatch metrics, written as Embedded Metric Format (EMF) log lines.

On Lambda, CloudWatch Logs reads each JSON line of stdout that carries an `_aws` block and
extracts its metrics: no call to CloudWatch, so nothing on the request path waits for one.
Elsewhere the same lines go to the log (`tracker.metrics`, at INFO), and do no harm; a
command's own output stays clean.

Every metric lives in one namespace, `Tracker`, and is listed once below (`CATALOGUE`) with its
unit and its dimensions: `Service` (the deployment, METRICS_SERVICE) and at most two of a
small fixed set (`Task`, `Outcome`, `Reason`), never a job, customer or endpoint, each of which
would make a metric of its own (a cost without bound). template.yaml's alarms name these.

Why not AWS Lambda Powertools' `Metrics`: importing it costs about 15 ms of CPU and 40 modules,
this module about 0.5 ms (README, "Operating"), on every cold start of the API.
"""

import enum
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

from config import config
from config.log import LOGGER_NAME

logger = logging.getLogger(f"{LOGGER_NAME}.metrics")

NAMESPACE = "Tracker"
# EMF takes at most 100 values per metric in one document.
MAX_VALUES = 100


class Unit(enum.StrEnum):
    COUNT = "Count"
    MILLISECONDS = "Milliseconds"
    SECONDS = "Seconds"


class Metric(NamedTuple):
    name: str
    unit: Unit
    # The dimensions besides Service, in the order the metric's dimension set names them.
    dimensions: tuple[str, ...] = ()


EVENTS_ACCEPTED = Metric("EventsAccepted", Unit.COUNT)
EVENTS_REJECTED = Metric("EventsRejected", Unit.COUNT, ("Reason",))
BATCH_SIZE = Metric("BatchSize", Unit.COUNT)
JOBS_COMPLETED = Metric("JobsCompleted", Unit.COUNT)
JOBS_FAILED = Metric("JobsFailed", Unit.COUNT)
JOBS_STALLED = Metric("JobsStalled", Unit.COUNT)
WEBHOOK_DELIVERIES = Metric("WebhookDeliveries", Unit.COUNT, ("Outcome",))
WEBHOOK_LATENCY = Metric("WebhookDeliveryLatency", Unit.MILLISECONDS, ("Outcome",))
# How long the longest-waiting due webhook delivery has waited past its time (0: none waits).
WEBHOOK_OLDEST_DUE = Metric("WebhookOldestDueWait", Unit.SECONDS)
TASK_RUNS = Metric("TaskRuns", Unit.COUNT, ("Task", "Outcome"))
TASK_DURATION = Metric("TaskDuration", Unit.MILLISECONDS, ("Task", "Outcome"))
TASK_ROWS = Metric("TaskRows", Unit.COUNT, ("Task", "Outcome"))

CATALOGUE = {
    metric.name: metric
    for metric in (
        EVENTS_ACCEPTED,
        EVENTS_REJECTED,
        BATCH_SIZE,
        JOBS_COMPLETED,
        JOBS_FAILED,
        JOBS_STALLED,
        WEBHOOK_DELIVERIES,
        WEBHOOK_LATENCY,
        WEBHOOK_OLDEST_DUE,
        TASK_RUNS,
        TASK_DURATION,
        TASK_ROWS,
    )
}

Value = float | Sequence[float]


def document(values: Mapping[Metric, Value], **dimensions: str) -> dict[str, object]:
    """One EMF document: the metrics, which share one dimension set, and their values."""
    names = {metric.dimensions for metric in values}
    if len(names) != 1 or set(next(iter(names))) != set(dimensions):
        raise ValueError(f"metrics of one document share the dimensions given: {dimensions}")
    members: dict[str, object] = {"Service": config.settings.metrics_service, **dimensions}
    for metric, value in values.items():
        members[metric.name] = value if isinstance(value, int | float) else list(value)
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Service", *next(iter(names))]],
                    "Metrics": [
                        {"Name": metric.name, "Unit": metric.unit.value} for metric in values
                    ],
                }
            ],
        },
        **members,
    }


def emit(values: Mapping[Metric, Value], **dimensions: str) -> None:
    """Write the metrics as one EMF line (more, should a list exceed MAX_VALUES): on Lambda to
    stdout, where CloudWatch Logs reads it; elsewhere to the `tracker.metrics` log at INFO.
    Metrics never make the work they measure fail: a write that fails is dropped."""
    on_lambda = config.settings.is_lambda
    if not on_lambda and not logger.isEnabledFor(logging.INFO):
        return
    present = {
        metric: value
        for metric, value in values.items()
        if isinstance(value, int | float) or len(value) > 0
    }
    if not present:
        return
    lines = [
        json.dumps(document(chunk, **dimensions), separators=(",", ":"))
        for chunk in _chunks(present)
    ]
    if not on_lambda:
        for line in lines:
            logger.info("%s", line)
        return
    try:
        sys.stdout.write("".join(f"{line}\n" for line in lines))
        sys.stdout.flush()
    except OSError:
        pass


def _chunks(values: Mapping[Metric, Value]) -> Iterator[dict[Metric, Value]]:
    """The values in documents of at most MAX_VALUES values per metric."""
    start = 0
    while True:
        chunk: dict[Metric, Value] = {}
        for metric, value in values.items():
            if isinstance(value, int | float):
                if start == 0:
                    chunk[metric] = value
            elif part := value[start : start + MAX_VALUES]:
                chunk[metric] = list(part)
        if not chunk:
            return
        yield chunk
        start += MAX_VALUES
