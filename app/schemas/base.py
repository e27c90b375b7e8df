from pydantic import BaseModel, ConfigDict


class Schema(BaseModel):
    """Base of every schema: reads ORM objects and refuses fields it does not know."""

    model_config = ConfigDict(from_attributes=True, extra="forbid")
