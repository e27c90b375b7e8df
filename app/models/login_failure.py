from datetime import datetime

from sqlalchemy import DateTime, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, IdMixin


class LoginFailure(IdMixin, Base):
    """A failed login, kept for the throttle's window: counted per account and client address,
    and per account alone. Unknown emails are counted too, so a 429 tells nothing about who has
    an account."""

    __tablename__ = "login_failures"
    __table_args__ = (
        # The throttle's counts: one account's failures in the window, and its address's.
        Index("ix_login_failures_email_failed_at", "email", "failed_at"),
    )

    email: Mapped[str] = mapped_column(String(320))
    client_address: Mapped[str] = mapped_column(String(64))
    # The sweep that deletes failures older than the window.
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
