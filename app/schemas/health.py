from typing import Literal

from app.schemas.base import Schema


class HealthPublic(Schema):
    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unreachable"]
