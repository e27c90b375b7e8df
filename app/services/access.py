"""Who is calling, and what that lets them see."""

from dataclasses import dataclass

from sqlalchemy import ColumnElement, true
from sqlalchemy.orm import InstrumentedAttribute

from app.internal.errors import Forbidden
from app.models import ApiKey, Scope, User, UserSession


@dataclass(frozen=True)
class Caller:
    """An authenticated request: the user, and how they proved it."""

    user: User
    session: UserSession | None = None
    api_key: ApiKey | None = None

    @property
    def is_admin(self) -> bool:
        return self.user.is_admin

    def has_scope(self, scope: Scope) -> bool:
        """A session may do all its user may; an API key only what its scopes allow."""
        return self.api_key is None or scope in self.api_key.scopes

    def can_see_customer(self, customer_id: int | None) -> bool:
        return self.is_admin or (customer_id is not None and customer_id == self.user.customer_id)

    @property
    def visible_customer_id(self) -> int | None:
        """The one customer whose rows the caller may see; None for all (an admin)."""
        return None if self.is_admin else self.user.customer_id

    def customer_filter(self, column: InstrumentedAttribute[int]) -> ColumnElement[bool]:
        """A WHERE clause limiting rows to what the caller may see."""
        return true() if self.is_admin else column == self.user.customer_id


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise Forbidden("Only admins may do this")
