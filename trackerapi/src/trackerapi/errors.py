"""What can go wrong, as types a script can catch."""

from __future__ import annotations

from typing import Any

# The answers that refuse a request's content for good: a spooled entry refused so is dropped
# (and reported); after any other refusal it stays spooled.
CONTENT_REFUSALS = frozenset({400, 404, 409, 413, 422})
CLOSED = "this tracker is closed: nothing more can be sent through it"


class TrackerError(Exception):
    """Anything the client raises."""


class ConfigurationError(TrackerError, ValueError):
    """The client was set up wrong (no API key, an unreadable configuration file, ...)."""


class ApiError(TrackerError):
    """The API refused the request: a 4xx (or a 5xx it does not retry), with its message."""

    def __init__(self, status_code: int, detail: str, *, method: str = "", path: str = "") -> None:
        where = f"{method} {path}: " if method else ""
        super().__init__(f"{where}{status_code} {detail}")
        self.status_code = status_code
        self.detail = detail

    @property
    def refuses_content(self) -> bool:
        """Whether the refusal is about what was sent, so sending it again cannot help. A 5xx
        (a crashed Lambda answers 500), 401 or 403 (a revoked key) says nothing about it."""
        return self.status_code in CONTENT_REFUSALS

    @staticmethod
    def describe(body: Any) -> str:
        """The API's `detail`, one line, whether it is text or FastAPI's list of field errors."""
        # API Gateway's own answers (a crashed function's 500) say `message`, not `detail`.
        detail = body.get("detail", body.get("message")) if isinstance(body, dict) else body
        if isinstance(detail, list):
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    location = ".".join(str(part) for part in item.get("loc", ()))
                    parts.append(f"{location}: {item.get('msg')}" if location else str(item))
                else:
                    parts.append(str(item))
            return "; ".join(parts)
        return str(detail)


class EventRejected(ApiError):
    """The API refused one event (an unknown step, a cancelled job, ...); nothing was stored."""


class TrackerUnavailable(TrackerError):
    """The API could not be reached, or kept answering 429/502/503/504, past the retry budget;
    for spooled and background delivery also a 5xx, 401 or 403, which keep the entries spooled.

    Raised only with `strict=True`; otherwise what was being sent goes to the spool.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
