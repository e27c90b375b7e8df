from typing import Any

from pydantic import Field

from app.schemas.base import Schema


class ErrorPublic(Schema):
    """The body of every error response."""

    detail: str


class ValidationErrorItem(Schema):
    """One problem FastAPI found with the request (its own `ValidationError`)."""

    loc: list[str | int] = Field(description="Where: body, query, path or header, then the field.")
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationErrorPublic(Schema):
    """The body of a 422 for a request that does not fit the schema: one item per problem."""

    detail: list[ValidationErrorItem]


ERROR_DESCRIPTIONS = {
    400: "The request body could not be parsed (not UTF-8, or a malformed form)",
    401: "Not authenticated: no credentials, or invalid or expired ones",
    403: "Not allowed: the role, the API key's scopes, or a cookie request's CSRF token or Origin",
    404: "Not found, or not visible to the caller",
    409: "Conflicts with the current state or with existing data",
    422: "Invalid input: FastAPI's validation errors list each field in `detail`; a value the "
    "domain refuses (an unknown tag, an invalid cursor, ...) is one message",
}


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the errors a route may answer, each with its body."""
    return {
        code: {
            "model": ValidationErrorPublic | ErrorPublic if code == 422 else ErrorPublic,
            "description": ERROR_DESCRIPTIONS[code],
        }
        for code in status_codes
    }
