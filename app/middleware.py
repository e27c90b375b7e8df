"""Request context: the request id, a bounded body, safe response headers, one access-log line per
request, the last-resort 500, and the 405 that names every method of a path."""

import logging
import re
import time
import uuid
from http import HTTPMethod

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config.log import LOGGER_NAME

access_logger = logging.getLogger(f"{LOGGER_NAME}.access")
error_logger = logging.getLogger(f"{LOGGER_NAME}.error")

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming id is echoed and logged, so it must be short and plain.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


# What OWASP's REST Security cheat sheet asks of every API answer, on top of nosniff and no-store:
# nothing in a JSON or CSV answer may run, load, be framed or leak the URL it came from.
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
API_CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'"
HSTS = "max-age=31536000"


def _security_headers(scope: Scope, headers: MutableHeaders) -> None:
    for name, value in SECURITY_HEADERS.items():
        headers.setdefault(name, value)
    # A route's own policy wins: the documentation pages send one that lets their scripts run.
    headers.setdefault("Content-Security-Policy", API_CONTENT_SECURITY_POLICY)
    if scope.get("scheme") == "https":
        # Only over HTTPS, where browsers heed it; behind API Gateway the scheme is https.
        headers.setdefault("Strict-Transport-Security", HSTS)


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


def client_address_for(scope: Scope, *, trusted_proxy_hops: int) -> str:
    """The address the request came from: the connection's (uvicorn), or the one the Lambda
    event names (Mangum puts API Gateway's `sourceIp` in the scope); with `trusted_proxy_hops`
    proxies in front, the address the outermost of them saw, from `X-Forwarded-For`. Entries
    further left are whatever the client wrote, so they are never read."""
    client = scope.get("client")
    # Mangum gives an ALB event's whole X-Forwarded-For: its last entry is the balancer's peer.
    peer = (client[0] if client else "").rsplit(",", 1)[-1].strip()
    if trusted_proxy_hops:
        forwarded = [
            entry.strip()
            for header in Headers(scope=scope).getlist("x-forwarded-for")
            for entry in header.split(",")
            if entry.strip()
        ]
        if forwarded:
            return forwarded[-min(trusted_proxy_hops, len(forwarded))]
    return peer


def _too_large(limit: int) -> str:
    return (
        f"The request body is larger than {limit} bytes: send less at once "
        "(split a batch of events, or trim their metadata)"
    )


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = request_id_for(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started_at = time.perf_counter()
        status = 500
        response_started = False
        received = 0

        async def bounded_receive() -> Message:
            # Chunked bodies have no Content-Length: count what arrives and stop at the limit.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(413, _too_large(self.max_body_bytes))
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                headers["X-Content-Type-Options"] = "nosniff"
                # Answers carry one caller's data: no shared cache may keep them.
                headers.setdefault("Cache-Control", "no-store")
                _security_headers(scope, headers)
            await send(message)

        try:
            declared = Headers(scope=scope).get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                response = JSONResponse(
                    {"detail": _too_large(self.max_body_bytes)}, status_code=413
                )
                await response(scope, receive, send_with_headers)
            else:
                await self.app(scope, bounded_receive, send_with_headers)
        except Exception:
            status = 500
            error_logger.exception(
                "Unhandled error",
                extra={"request_id": request_id, "method": scope["method"], "path": scope["path"]},
            )
            if not response_started:
                response = JSONResponse({"detail": "Internal server error"}, status_code=500)
                await response(scope, receive, send_with_headers)
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


def allowed_methods(scope: Scope) -> list[str]:
    """Every method some route of the app answers at this request's path."""
    routes = scope["app"].router.routes
    return [
        method
        for method in HTTPMethod
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in routes)
    ]


async def method_not_allowed(request: Request, error: Exception) -> JSONResponse:
    """405 with `Allow` naming all of the path's methods (RFC 9110), not only the methods of the
    first route that matched the path, as routing alone would."""
    allowed = allowed_methods(request.scope)
    return JSONResponse(
        {"detail": f"{request.method} is not allowed here; this path takes {', '.join(allowed)}"},
        status_code=405,
        headers={"Allow": ", ".join(allowed)},
    )
