from typing import Any

from pydantic import Field
from pydantic.json_schema import models_json_schema

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


def _reference(model: type[Schema]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def error_response(description: str, *, validation: bool = False) -> dict[str, Any]:
    """An OpenAPI response whose body is `ErrorPublic` (or, for invalid input, either error
    body), named by reference. A `model` would have FastAPI build a validator for every error
    of every route when the app is imported, for a document that only needs the schema once:
    it was most of the app's cold start. `error_schemas` puts the schemas in the document."""
    schema: dict[str, Any] = (
        {"anyOf": [_reference(ValidationErrorPublic), _reference(ErrorPublic)]}
        if validation
        else _reference(ErrorPublic)
    )
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the errors a route may answer, each with its body."""
    return {
        code: error_response(ERROR_DESCRIPTIONS[code], validation=code == 422)
        for code in status_codes
    }


def error_schemas() -> dict[str, Any]:
    """The components `error_response` refers to, for the OpenAPI document."""
    _, document = models_json_schema(
        [(ErrorPublic, "serialization"), (ValidationErrorPublic, "serialization")],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = document["$defs"]
    return schemas
