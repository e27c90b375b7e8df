from datetime import datetime

from pydantic import ConfigDict, Field, StrictBool, StrictInt, model_validator

from app.models import Role
from app.schemas.base import Schema
from app.schemas.fields import CustomerName, Email, Name, Password


class UserBase(Schema):
    email: Email
    first_name: Name
    last_name: Name


class UserCreate(UserBase):
    """Sign-up names a new customer; an admin instead sets `role` and `customer_id`."""

    password: Password
    customer_name: CustomerName | None = Field(
        default=None, description="Sign-up only: the organisation to create for this user."
    )
    role: Role | None = Field(default=None, description="Admins only.")
    customer_id: StrictInt | None = Field(default=None, description="Admins only.")


class UserUpdateMe(Schema):
    # A new password needs the current one (a non-empty string); null changes nothing.
    model_config = ConfigDict(
        json_schema_extra={
            "if": {
                "properties": {"new_password": {"type": "string"}},
                "required": ["new_password"],
            },
            "then": {
                "properties": {"current_password": {"type": "string", "minLength": 1}},
                "required": ["current_password"],
            },
        }
    )

    first_name: Name | None = None
    last_name: Name | None = None
    current_password: str | None = Field(
        default=None, max_length=128, description="Required with new_password."
    )
    new_password: Password | None = Field(
        default=None, description="Needs current_password; ends your other sessions."
    )

    @model_validator(mode="after")
    def _password_change_needs_current_password(self) -> "UserUpdateMe":
        if self.new_password is not None and not self.current_password:
            raise ValueError("current_password is required to set new_password")
        return self


class UserUpdate(Schema):
    """What an admin may change about any user."""

    first_name: Name | None = None
    last_name: Name | None = None
    role: Role | None = None
    customer_id: StrictInt | None = None
    is_active: StrictBool | None = None


class UserPublic(UserBase):
    id: int
    role: Role
    customer_id: int | None
    is_active: bool
    created_at: datetime
    updated_at: datetime
