import enum
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, DateTime, Enum, ForeignKey, String, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, IdMixin

if TYPE_CHECKING:
    from app.models.user import User


class Scope(enum.StrEnum):
    INGEST = "ingest"
    READ = "read"
    # Job configuration writes, for an admin's key only (CI pushing a pipeline's steps).
    CONFIGURE = "configure"


class ApiKey(IdMixin, Base):
    """A secret for scripts; it acts as its owner, narrowed by its scopes."""

    __tablename__ = "api_keys"

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[Scope]] = mapped_column(
        ARRAY(
            Enum(
                Scope,
                name="api_key_scope",
                values_callable=lambda scopes: [scope.value for scope in scopes],
            )
        )
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped["User"] = relationship(lazy="raise")
