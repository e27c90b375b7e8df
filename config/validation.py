"""Pydantic's validation errors as one line, for messages a person reads (settings, files, the
rejected items of a batch)."""

from pydantic import ValidationError


def describe_validation_error(
    error: ValidationError, *, subject: str | None = None, most: int | None = None
) -> str:
    """Each problem as `location: message`, joined by "; ". A problem with the whole value has no
    location: `subject` names it (else the message stands alone). Past `most` problems, the rest
    are counted, not listed."""
    problems = []
    for problem in error.errors(include_url=False):
        location = ".".join(str(part) for part in problem["loc"]) or subject
        problems.append(f"{location}: {problem['msg']}" if location else problem["msg"])
    if most is None or len(problems) <= most:
        return "; ".join(problems)
    return f"{'; '.join(problems[:most])} (and {len(problems) - most} more)"
