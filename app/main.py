"""The FastAPI application and its AWS Lambda handler.

Configuration happens here, at import: Mangum runs no startup hook with `lifespan="off"`, and a
Lambda instance imports this module once and then serves many requests.
"""

# First: the collector stays off while the app and its libraries import (app.cold_start).
from app import cold_start  # isort: split

import logging
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from psycopg2 import errors as pg_errors
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from app import snapstart
from app.entrypoint import LambdaHandler, run_sync_functions_inline
from app.internal.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    Unauthorized,
)
from app.middleware import RequestContextMiddleware, method_not_allowed
from app.routers import (
    analytics,
    api_keys,
    auth,
    billing,
    customers,
    docs,
    events,
    health,
    job_configurations,
    jobs,
    system,
    users,
    webhooks,
)
from app.schemas.error import error_response, error_schemas
from config import config

logger = logging.getLogger("tracker.errors")

config.setup()
settings = config.settings

DESCRIPTION = """
Tracks multi-step jobs: scripts report each step of a job they run for a customer, and the API
keeps every job's progress, errors and bill exact.
"""

app = FastAPI(
    title=settings.app_name,
    version="0.1.0",
    description=DESCRIPTION,
    # The documentation pages are app.routers.docs: served with their assets, no CDN.
    docs_url=None,
    redoc_url=None,
    openapi_url="/openapi.json" if settings.docs_enabled else None,
    responses={
        status.HTTP_503_SERVICE_UNAVAILABLE: error_response(
            "The database is unavailable or busy; retry the request"
        )
    },
)


def openapi_document() -> dict[str, Any]:
    """FastAPI's document (built once, then cached) with the error bodies' schemas."""
    document = FastAPI.openapi(app)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in error_schemas().items():
        schemas.setdefault(name, schema)
    return document


app.openapi = openapi_document  # type: ignore[method-assign]

if settings.cors_origins:
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
    )
app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_request_bytes)
app.add_exception_handler(status.HTTP_405_METHOD_NOT_ALLOWED, method_not_allowed)

for router in (
    health.router,
    auth.router,
    users.router,
    customers.router,
    api_keys.router,
    job_configurations.router,
    jobs.router,
    events.router,
    billing.router,
    analytics.router,
    webhooks.router,
    system.router,
):
    app.include_router(router)
app.webhooks.include_router(webhooks.notifications)
if settings.docs_enabled:
    app.include_router(docs.router)


STATUS_BY_ERROR: dict[type[DomainError], int] = {
    NotFound: status.HTTP_404_NOT_FOUND,
    Conflict: status.HTTP_409_CONFLICT,
    Forbidden: status.HTTP_403_FORBIDDEN,
    Unauthorized: status.HTTP_401_UNAUTHORIZED,
    InvalidInput: status.HTTP_422_UNPROCESSABLE_CONTENT,
    RateLimited: status.HTTP_429_TOO_MANY_REQUESTS,
}


@app.exception_handler(DomainError)
def handle_domain_error(request: Request, error: DomainError) -> JSONResponse:
    status_code = next(
        (code for kind, code in STATUS_BY_ERROR.items() if isinstance(error, kind)),
        status.HTTP_400_BAD_REQUEST,
    )
    headers: dict[str, str] = {}
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(error.retry_after)
    elif isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"detail": error.detail}, status_code=status_code, headers=headers)


@app.exception_handler(RequestValidationError)
async def handle_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """FastAPI's own answer, unless the input a problem echoes cannot be written as JSON (NaN
    or Infinity, which Python's parser takes, or nesting too deep to encode): then without it."""
    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
    try:
        return JSONResponse({"detail": jsonable_encoder(error.errors())}, status_code=status_code)
    except (ValueError, RecursionError):
        problems = [
            {key: value for key, value in problem.items() if key not in ("input", "ctx")}
            for problem in error.errors()
        ]
        return JSONResponse({"detail": jsonable_encoder(problems)}, status_code=status_code)


@app.exception_handler(OperationalError)
@app.exception_handler(InterfaceError)
def handle_database_unavailable(request: Request, error: Exception) -> JSONResponse:
    # The error itself, not exc_info=True: a sync handler may run in a worker thread, where no
    # exception is being handled.
    logger.warning("Database unavailable: %s", error, exc_info=error)
    cause = getattr(error, "orig", None)
    if isinstance(cause, pg_errors.QueryCanceled):
        detail = "The request took too long and was cancelled; retry it, or ask for less"
    else:
        detail = "The database is unavailable; retry the request shortly"
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})


@app.exception_handler(IntegrityError)
def handle_integrity_error(request: Request, error: IntegrityError) -> JSONResponse:
    # Services check what they can first; this catches what only the database can decide,
    # such as two requests creating the same unique thing at the same moment.
    logger.info("Integrity error: %s", error.orig)
    return JSONResponse(
        {"detail": "The request conflicts with existing data; read it and retry"},
        status_code=status.HTTP_409_CONFLICT,
    )


# The Lambda entry point: HTTP events, schedules and the deploy's migrations (app.entrypoint).
handler = LambdaHandler(app, base_path=settings.api_base_path)
if settings.is_lambda:
    # One request at a time: no worker thread and no hop to one (under uvicorn, nothing changes).
    run_sync_functions_inline()
    snapstart.register_hooks()

cold_start.done()
