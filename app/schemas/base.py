from pydantic import BaseModel, ConfigDict


class Schema(BaseModel):
    """Base of every schema: reads ORM objects and refuses fields it does not know.

    A field may read its ORM attribute under another name (`validation_alias`); it still
    accepts its own name, so one public schema can be built from another.
    """

    model_config = ConfigDict(
        from_attributes=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        defer_build=True,
    )
