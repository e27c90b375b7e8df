from typing import Generic, TypeVar

from app.schemas.base import Schema

ItemT = TypeVar("ItemT")


class Page(Schema, Generic[ItemT]):
    """One page of a list; pass `next_cursor` as `cursor` for the next (null on the last)."""

    items: list[ItemT]
    next_cursor: str | None
