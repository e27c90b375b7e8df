"""Free-form JSON metadata, bounded in size and depth so one request cannot exhaust anything."""

import json
from typing import Annotated, Any

from pydantic import AfterValidator, Field

MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 10


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0


def _has_nul(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return isinstance(value, str) and "\x00" in value


def _bounded(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if _depth(value) > MAX_METADATA_DEPTH:
        raise ValueError(f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels")
    # PostgreSQL's jsonb cannot hold the NUL character.
    if _has_nul(value):
        raise ValueError("metadata must not contain the NUL character (\\u0000)")
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {size} bytes; at most {MAX_METADATA_BYTES} are allowed")
    return value


Metadata = Annotated[
    dict[str, Any] | None,
    AfterValidator(_bounded),
    Field(
        description=f"Any JSON object, at most {MAX_METADATA_BYTES} bytes (compact UTF-8 JSON) "
        f"and {MAX_METADATA_DEPTH} levels deep; no key or string in it may contain the NUL "
        "character (\\u0000)."
    ),
]
