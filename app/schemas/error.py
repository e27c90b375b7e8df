from app.schemas.base import Schema


class ErrorPublic(Schema):
    """The body of every error response."""

    detail: str
