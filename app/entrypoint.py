"""The Lambda entry point: what to do is read from the event's shape, the same way in each
function (the API's `app.main.handler`, the worker's and the migration function's
`app.worker.handler`):

- HTTP (API Gateway REST or HTTP API, any stage or custom-domain base path, ALB, Function URL):
  the FastAPI app, through Mangum;
- a schedule (EventBridge Scheduler with `{"task": NAME}` as its input, or an `aws.events`
  Scheduled Event): the scheduled task of that name;
- a CloudFormation custom resource: the migrations (`app.deploy`), which `{"action": "migrate"}`
  also runs, for an operator invoking the function by hand;
- anything else: an error in the log that says what arrived.
"""

import contextvars
import logging
from collections.abc import Callable
from typing import Any, TypeVar, TypeVarTuple, Unpack

import anyio.to_thread
from anyio import CapacityLimiter
from mangum import Mangum
from starlette.types import ASGIApp, Receive, Scope, Send

from config.log import LOGGER_NAME

logger = logging.getLogger(f"{LOGGER_NAME}.lambda")

LambdaEvent = dict[str, Any]


T = TypeVar("T")
PosArgsT = TypeVarTuple("PosArgsT")


class UnknownEvent(Exception):
    """The event has no shape this function serves."""


def _has_prefix(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(f"{prefix}/")


def external_prefix(event: LambdaEvent, path: str, *, base_path: str) -> str:
    """What API Gateway puts before the app's own paths in the URL the client used.

    - HTTP API (and Function URL) events keep a named stage in the path (`/default/health`,
      stage `default`); `$default` has none.
    - REST API events have the stage stripped from `path`, but `requestContext.path` keeps it.
    - Through a custom domain, the API mapping's path (`base_path`) stays in the path of both.
    """
    request_context = event.get("requestContext") or {}
    stage = request_context.get("stage")
    if isinstance(stage, str) and stage and stage != "$default":
        stage_prefix = f"/{stage}"
        if "version" in event and _has_prefix(path, stage_prefix):
            return stage_prefix
        if "version" not in event and request_context.get("path") == f"{stage_prefix}{path}":
            return stage_prefix
    if base_path and _has_prefix(path, base_path):
        return base_path
    return ""


class ExternalRootPath:
    """Serves the app under the prefix of the URL the client used, as ASGI's `root_path`:
    routing ignores it, and the documentation and OpenAPI `servers` include it."""

    def __init__(self, app: ASGIApp, *, base_path: str) -> None:
        self.app = app
        self.base_path = base_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        event = scope.get("aws.event")
        if scope["type"] == "http" and isinstance(event, dict):
            path: str = scope["path"]
            prefix = external_prefix(event, path, base_path=self.base_path)
            if prefix:
                # ASGI paths include the root path (as uvicorn's --root-path does).
                full_path = path if _has_prefix(path, prefix) else f"{prefix}{path}"
                scope = {**scope, "root_path": prefix, "path": full_path}
        await self.app(scope, receive, send)


def join_cookie_entries(event: LambdaEvent) -> LambdaEvent:
    """A payload 1.0 event with its Cookie entries joined as a browser sends them (`; `):
    Mangum joins every repeated header with `, `, which splits no cookie header."""
    multi = event.get("multiValueHeaders")
    if not isinstance(multi, dict):
        return event
    cookie_names = [name for name, values in multi.items() if name.lower() == "cookie" and values]
    if not cookie_names:
        return event
    cookies = "; ".join(value for name in cookie_names for value in multi[name])
    headers = {
        name: value
        for name, value in (event.get("headers") or {}).items()
        if name.lower() != "cookie"
    }
    others = {name: values for name, values in multi.items() if name.lower() != "cookie"}
    return {
        **event,
        "headers": {**headers, "cookie": cookies},
        "multiValueHeaders": {**others, "cookie": [cookies]},
    }


def event_kind(event: object) -> str | None:
    """`http`, `schedule`, `custom-resource`, `migrate`, or None for a shape nothing here
    serves."""
    if not isinstance(event, dict):
        return None
    request_context = event.get("requestContext")
    if isinstance(request_context, dict) and (
        "httpMethod" in event or "http" in request_context or "elb" in request_context
    ):
        return "http"
    if "RequestType" in event and "ResponseURL" in event and "StackId" in event:
        return "custom-resource"
    if event.get("action") == "migrate":
        return "migrate"
    if isinstance(event.get("task"), str) or (
        event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event"
    ):
        return "schedule"
    return None


def scheduled_task_name(event: LambdaEvent, task_names: list[str]) -> str:
    """The task a schedule names: its input's `task`, else (a Scheduled Event of an
    EventBridge rule) the task whose name the rule's name is or ends with (`-NAME`)."""
    if isinstance(event.get("task"), str):
        return str(event["task"])
    detail = event.get("detail")
    if isinstance(detail, dict) and isinstance(detail.get("task"), str):
        return str(detail["task"])
    for resource in event.get("resources") or []:
        rule = str(resource).rpartition("/")[2]
        for name in task_names:
            if rule == name or rule.endswith(f"-{name}"):
                return name
    raise UnknownEvent(
        f"a Scheduled Event from {event.get('resources')} names no task: name the rule after "
        f'one ({", ".join(task_names)}) or give it the input {{"task": NAME}}'
    )


def describe(event: object) -> str:
    """What arrived, for the log: its type, keys and the fields that usually identify it."""
    if not isinstance(event, dict):
        return f"a {type(event).__name__}, not a JSON object"
    hints = {
        key: str(event[key])[:100]
        for key in ("source", "detail-type", "version", "RequestType", "eventSource")
        if isinstance(event.get(key), str | int)
    }
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], dict):
        source = records[0].get("eventSource") or records[0].get("EventSource")
        hints["Records[0].eventSource"] = str(source)[:100]
    keys = [str(key)[:50] for key in sorted(event)[:20]]
    return f"an object with keys {keys}" + (f" ({hints})" if hints else "")


async def _run_inline(
    func: Callable[[Unpack[PosArgsT]], T],
    *args: *PosArgsT,
    abandon_on_cancel: bool = False,
    cancellable: bool | None = None,
    limiter: CapacityLimiter | None = None,
) -> T:
    """`anyio.to_thread.run_sync` on the calling thread: the function runs at once, in a copy of
    the caller's context, as a worker thread would run it."""
    return contextvars.copy_context().run(func, *args)


def run_sync_functions_inline() -> None:
    """Run the app's sync functions (routes, dependencies, exception handlers) on the event
    loop's thread instead of a worker thread.

    A Lambda instance serves one request at a time, so the loop has nothing else to do while
    one runs. Through Mangum, each invocation is a task of its own, and anyio stops the worker
    threads of a task when it ends: a thread started for every invocation, and a hop to it and
    back for every sync function (four for an event). Starlette and FastAPI send every such call
    through `anyio.to_thread.run_sync`, which this replaces for the process.
    """
    anyio.to_thread.run_sync = _run_inline


class LambdaHandler:
    """Dispatches each Lambda event by its shape (see the module's docstring).

    Without `app`, the functions that serve no HTTP build none: the app is imported (from
    `app.main`) only if an HTTP event arrives after all.
    """

    def __init__(self, app: ASGIApp | None, *, base_path: str) -> None:
        self.base_path = base_path
        self._http = self._mangum(app) if app is not None else None

    def _mangum(self, app: ASGIApp) -> Mangum:
        return Mangum(ExternalRootPath(app, base_path=self.base_path), lifespan="off")

    @property
    def http(self) -> Mangum:
        if self._http is None:
            from app.main import app

            self._http = self._mangum(app)
        return self._http

    def __call__(self, event: LambdaEvent, context: Any) -> dict[str, Any]:
        kind = event_kind(event)
        if kind == "http":
            return self.http(join_cookie_entries(event), context)
        if kind in {"custom-resource", "migrate"}:
            # Only here: Alembic is no part of serving a request.
            from app import deploy

            if kind == "migrate":
                return deploy.migrate()
            return deploy.handle_custom_resource(event, context)
        # Only here: a request needs none of the scheduled tasks' code.
        from app.scheduled import SCHEDULED_TASKS, UnknownTask, run_task

        try:
            if kind == "schedule":
                name = scheduled_task_name(event, list(SCHEDULED_TASKS))
                return {"task": name, "counts": run_task(name)}
            raise UnknownEvent(
                f"This function serves HTTP, schedules and deploys; it received {describe(event)}"
            )
        except (UnknownEvent, UnknownTask) as error:
            logger.error("%s", error)
            raise
