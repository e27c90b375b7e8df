"""Every model, imported here so `Base.metadata` (and so Alembic) knows them all."""

from app.models.base import Base
from app.models.customer import Customer

__all__ = ["Base", "Customer"]
