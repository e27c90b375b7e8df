"""Request context: the request id, one access-log line per request, and the last-resort 500."""

import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config.log import LOGGER_NAME

access_logger = logging.getLogger(f"{LOGGER_NAME}.access")
error_logger = logging.getLogger(f"{LOGGER_NAME}.error")

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming id is echoed and logged, so it must be short and plain.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_for(scope: Scope) -> str:
    """The Lambda request id when there is one, else the client's X-Request-ID, else a new one."""
    lambda_context = scope.get("aws.context")
    lambda_request_id = getattr(lambda_context, "aws_request_id", None)
    if isinstance(lambda_request_id, str) and lambda_request_id:
        return lambda_request_id
    incoming = Headers(scope=scope).get(REQUEST_ID_HEADER)
    if incoming and _VALID_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = request_id_for(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started_at = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_request_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception:
            status = 500
            error_logger.exception(
                "Unhandled error",
                extra={"request_id": request_id, "method": scope["method"], "path": scope["path"]},
            )
            if not response_started:
                response = JSONResponse(
                    {"detail": "Internal server error"},
                    status_code=500,
                    headers={REQUEST_ID_HEADER: request_id},
                )
                await response(scope, receive, send)
        finally:
            duration_ms = round((time.perf_counter() - started_at) * 1000, 1)
            access_logger.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": duration_ms,
                },
            )
