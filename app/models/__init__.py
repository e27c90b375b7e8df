"""Every model, imported here so `Base.metadata` (and so Alembic) knows them all."""

from app.models.api_key import ApiKey, Scope
from app.models.base import Base
from app.models.customer import Customer
from app.models.user import Role, User
from app.models.user_session import UserSession

__all__ = ["ApiKey", "Base", "Customer", "Role", "Scope", "User", "UserSession"]
