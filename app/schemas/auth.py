from datetime import datetime
from typing import Literal

from app.schemas.base import Schema
from app.schemas.fields import Email, LoginPassword
from app.schemas.user import UserPublic


class LoginRequest(Schema):
    email: Email
    password: LoginPassword


class LoginPublic(Schema):
    user: UserPublic
    csrf_token: str
    expires_at: datetime


class TokenPublic(Schema):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_at: datetime
