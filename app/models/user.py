import enum
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, IdMixin, TimestampMixin

if TYPE_CHECKING:
    from app.models.customer import Customer


class Role(enum.StrEnum):
    ADMIN = "admin"
    CLIENT = "client"


class User(IdMixin, TimestampMixin, Base):
    """A person: provider staff (`admin`) or one of a customer's people (`client`)."""

    __tablename__ = "users"
    __table_args__ = (
        # Emails are stored lower-cased, so the unique index makes them unique regardless of case.
        CheckConstraint("email = lower(email)", name="email_lower_case"),
        CheckConstraint(
            "(role = 'client') = (customer_id IS NOT NULL)", name="client_has_customer"
        ),
    )

    email: Mapped[str] = mapped_column(String(320), unique=True)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(
        Enum(Role, name="user_role", values_callable=lambda roles: [role.value for role in roles])
    )
    customer_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("customers.id", ondelete="RESTRICT"), index=True
    )
    is_active: Mapped[bool] = mapped_column(default=True, server_default="true")
    password_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Deprecated, never read or written here: the login throttle before login_failures counted
    # in these, and the release before this one still does. A later release drops them.
    failed_login_count: Mapped[int] = mapped_column(server_default="0")
    failed_login_window_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    customer: Mapped["Customer | None"] = relationship(lazy="raise")

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def may_authenticate(self) -> bool:
        """Active, and not of a deactivated customer (needs `customer` loaded)."""
        return self.is_active and (self.customer is None or self.customer.is_active)
