from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field

from app.models import Scope
from app.schemas.base import Schema
from app.schemas.fields import AwareUtcDatetime, Name


def _unique(scopes: list[Scope]) -> list[Scope]:
    if len(set(scopes)) != len(scopes):
        raise ValueError("scopes must not repeat")
    return scopes


Scopes = Annotated[
    list[Scope],
    Field(min_length=1, max_length=len(Scope), json_schema_extra={"uniqueItems": True}),
    AfterValidator(_unique),
]


class ApiKeyBase(Schema):
    name: Name
    scopes: Scopes
    expires_at: AwareUtcDatetime | None = Field(
        default=None, description="When the key stops working (timezone-aware); never if null."
    )


class ApiKeyCreate(ApiKeyBase):
    pass


class ApiKeyPublic(ApiKeyBase):
    id: int
    user_id: int
    prefix: str = Field(description="The key's first characters, to recognise it.")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="The whole key. Shown this once: store it now.")
