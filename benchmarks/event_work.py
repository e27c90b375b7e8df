"""For benchmarks.ingest: the database's own work per single step event, in one warm session
each way, read by `EXPLAIN (ANALYZE, BUFFERS, WAL)` of each call: the API's `apply_event`, and
the baseline's statements in a function of their own (`baseline.RAW_EVENT_FUNCTION`), so that
both counts include the foreign key checks and triggers their statements fire. Executor time,
shared buffers touched and WAL bytes do not depend on other sessions, unlike rates and CPU
times on a shared machine; each figure is the median over the events."""

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL

from benchmarks.baseline import RAW_EVENT_FUNCTION, PlannedEvent
from benchmarks.support import connection

WARM_UP = 20
EXPLAIN = "EXPLAIN (ANALYZE, BUFFERS, WAL, TIMING OFF, FORMAT JSON) "


@dataclass(frozen=True)
class EventWork:
    """Medians per event."""

    executor_ms: float
    buffers: float
    wal_bytes: float

    def ratio(self, baseline: "EventWork") -> "EventWork":
        return EventWork(
            self.executor_ms / baseline.executor_ms,
            self.buffers / baseline.buffers,
            self.wal_bytes / baseline.wal_bytes,
        )


def _api_call(event: PlannedEvent) -> tuple[str, tuple[Any, ...]]:
    body = {"job_id": event.job_id, "kind": "step", "name": event.step.tag}
    body["event_id"] = event.event_id
    return "SELECT * FROM apply_event(%s::jsonb, NULL)", (json.dumps(body),)


def _raw_call(event: PlannedEvent) -> tuple[str, tuple[Any, ...]]:
    step = event.step
    return (
        "SELECT * FROM bench_raw_event(%s, %s, %s, %s, %s, %s)",
        (event.job_id, step.id, step.tag, step.points, step.cost, event.event_id),
    )


Call = Callable[[PlannedEvent], tuple[str, tuple[Any, ...]]]


def _measure(url: URL, events: Sequence[PlannedEvent], call: Call) -> EventWork:
    """Each event in a transaction of its own, as a request's; the first WARM_UP events are
    not counted (plans, caches)."""
    times, buffers, wal = [], [], []
    with connection(url) as conn, conn.cursor() as cursor:
        cursor.execute("SET jit = off")  # as the app's sessions
        conn.commit()
        for number, event in enumerate(events):
            statement, parameters = call(event)
            cursor.execute(EXPLAIN + statement, parameters)
            [[explained]] = cursor.fetchone()
            conn.commit()
            if number < WARM_UP:
                continue
            plan = explained["Plan"]
            times.append(explained["Execution Time"])
            buffers.append(plan["Shared Hit Blocks"] + plan["Shared Read Blocks"])
            wal.append(plan["WAL Bytes"])
    return EventWork(statistics.median(times), statistics.median(buffers), statistics.median(wal))


def per_event_work(
    url: URL, api_events: Sequence[PlannedEvent], raw_events: Sequence[PlannedEvent]
) -> tuple[EventWork, EventWork]:
    """The API's and the baseline's work per event, each on its own events (new jobs)."""
    with connection(url, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.execute(RAW_EVENT_FUNCTION)
    try:
        return _measure(url, api_events, _api_call), _measure(url, raw_events, _raw_call)
    finally:
        with connection(url, autocommit=True) as conn, conn.cursor() as cursor:
            cursor.execute("DROP FUNCTION bench_raw_event")
