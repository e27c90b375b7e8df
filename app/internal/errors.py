"""Domain errors: what went wrong, in the service's words. `app.main` maps each to a status."""


class DomainError(Exception):
    """Base of the errors services raise; the message is shown to the client as `detail`.

    The request's transaction is rolled back, unless `keep_changes` says the work done before
    the error must stand (a failed login is counted even though the login is refused).
    """

    def __init__(self, detail: str, *, keep_changes: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.keep_changes = keep_changes


class NotFound(DomainError):
    """The object does not exist, or the caller may not see it (the two look the same)."""


class Conflict(DomainError):
    """The request contradicts the current state (a duplicate, a cancelled job, ...)."""


class Forbidden(DomainError):
    """The caller is known but may not do this."""


class Unauthorized(DomainError):
    """The caller could not be identified."""


class InvalidInput(DomainError):
    """Well-formed input that the domain rejects (an unknown step tag, ...)."""


class RateLimited(DomainError):
    """Too many attempts; retry after `retry_after` seconds."""

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
