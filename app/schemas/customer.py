from datetime import datetime

from pydantic import StrictBool

from app.schemas.base import Schema
from app.schemas.fields import CustomerName


class CustomerBase(Schema):
    name: CustomerName


class CustomerCreate(CustomerBase):
    pass


class CustomerUpdate(Schema):
    name: CustomerName | None = None
    is_active: StrictBool | None = None


class CustomerPublic(CustomerBase):
    id: int
    is_active: bool
    created_at: datetime
    updated_at: datetime
