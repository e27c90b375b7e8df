"""Free-form JSON metadata, bounded in size and depth so one request cannot exhaust anything."""

import json
from typing import Annotated, Any

from pydantic import AfterValidator, Field

MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 10


def _deeper_than(value: Any, levels: int) -> bool:
    """Whether `value` nests more than `levels` deep; it looks no deeper than that, so a deep
    value costs no more than a shallow one."""
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, list):
        return False
    return levels == 0 or any(_deeper_than(item, levels - 1) for item in value)


def _has_nul(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return isinstance(value, str) and "\x00" in value


def _bounded(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if _deeper_than(value, MAX_METADATA_DEPTH):
        raise ValueError(f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels")
    # PostgreSQL's jsonb cannot hold the NUL character.
    if _has_nul(value):
        raise ValueError("metadata must not contain the NUL character (\\u0000)")
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise ValueError(
            "metadata must not contain NaN or Infinity, which JSON cannot hold"
        ) from None
    size = len(text.encode())
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
