import enum
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StrictInt, StringConstraints
from pydantic.config import JsonDict

from app.models.job_configuration import MAX_JOB_TIMEOUT_SECONDS, MAX_STEP_TIMEOUT_SECONDS
from app.schemas.base import Schema
from app.schemas.fields import NO_NUL

MAX_STEPS = 500
MAX_FILE_CONFIGURATIONS = 100
# What Numeric(18, 4) can hold, for a step's cost and for the configuration's total.
MAX_TOTAL_COST = Decimal("99999999999999.9999")

Tag = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$"),
    Field(description="Lower-case letters, digits, '_', '.', '-'; 1 to 64 characters."),
]
ConfigurationName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NO_NUL)
]
COST_PATTERN = r"^[0-9]{1,14}(\.[0-9]{1,4})?$"


# Numeric(18, 4) holds 14 digits before the point; a JSON number is read as a float, and every
# float below this bound has at most 14.
COST_NUMBER_BOUND = 10**14


def _cost_json_schema(schema: JsonDict) -> None:
    """Give each form of a cost its bound: the string its pattern, so editors flag "1.23456"
    too, and the number its maximum."""
    options = schema.get("anyOf", [schema])
    assert isinstance(options, list)
    for option in options:
        if isinstance(option, dict) and option.get("type") == "string":
            option["pattern"] = COST_PATTERN
        elif isinstance(option, dict) and option.get("type") == "number":
            option["exclusiveMaximum"] = COST_NUMBER_BOUND


Points = Annotated[
    StrictInt, Field(ge=1, le=1_000_000, description="The step's weight in the job's progress.")
]
Cost = Annotated[
    Decimal,
    Field(
        ge=0,
        max_digits=18,
        decimal_places=4,
        allow_inf_nan=False,
        description="What the step bills when completed; at most 4 decimal places. A string "
        "keeps every digit; a JSON number is exact up to 15 significant digits.",
        json_schema_extra=_cost_json_schema,
    ),
]


class JobConfigurationStepBase(Schema):
    tag: Tag
    name: ConfigurationName
    points: Points
    cost: Cost


class JobConfigurationStepCreate(JobConfigurationStepBase):
    pass


class JobConfigurationStepPublic(JobConfigurationStepBase):
    position: int = Field(description="0-based place of the step in the configuration.")


def _check_steps(steps: list[JobConfigurationStepCreate]) -> list[JobConfigurationStepCreate]:
    repeated = _repeated(step.tag for step in steps)
    if repeated:
        raise ValueError(f"step tags must be unique within a configuration; repeated: {repeated}")
    if sum(step.cost for step in steps) > MAX_TOTAL_COST:
        raise ValueError(f"the steps' total cost must not exceed {MAX_TOTAL_COST}")
    return steps


def _repeated(tags: Iterable[str]) -> str:
    seen: set[str] = set()
    repeated: list[str] = []
    for tag in tags:
        if tag in seen and tag not in repeated:
            repeated.append(tag)
        seen.add(tag)
    return ", ".join(repr(tag) for tag in repeated)


Steps = Annotated[
    list[JobConfigurationStepCreate],
    Field(min_length=1, max_length=MAX_STEPS, description="The steps, in order."),
    AfterValidator(_check_steps),
]


StepTimeout = Annotated[StrictInt, Field(ge=1, le=MAX_STEP_TIMEOUT_SECONDS)]


class JobConfigurationBase(Schema):
    tag: Tag
    name: ConfigurationName
    start_timeout: StepTimeout | None = Field(
        default=None,
        description="Seconds a job may wait for its first event after creation, at most 30 "
        "days; none: no limit.",
    )
    step_timeout: StepTimeout | None = Field(
        default=None,
        description="Seconds a job may wait for its next event, at most 30 days; none: learnt "
        "from this version's history once each step has enough of it.",
    )
    job_timeout: Annotated[StrictInt, Field(ge=1, le=MAX_JOB_TIMEOUT_SECONDS)] | None = Field(
        default=None,
        description="Seconds a job may take from creation, at most a year; none: no limit.",
    )


class JobConfigurationCreate(JobConfigurationBase):
    steps: Steps


class JobConfigurationPublic(JobConfigurationBase):
    id: int
    version: int
    step_count: int
    total_points: int
    total_cost: Decimal
    created_at: datetime
    steps: list[JobConfigurationStepPublic]


class UpsertResult(enum.StrEnum):
    CREATED = "created"
    UNCHANGED = "unchanged"
    NEW_VERSION = "new_version"


class JobConfigurationUpserted(Schema):
    """What an upload did to one configuration."""

    tag: str
    version: int = Field(description="The current version after the upload.")
    result: UpsertResult


# The file format scripts keep next to their code -------------------------------------------------


class JobConfigurationFileEntry(JobConfigurationBase):
    """One job configuration: its tag, name and ordered steps."""

    step_configurations: Steps

    def to_create(self) -> JobConfigurationCreate:
        return JobConfigurationCreate(
            tag=self.tag,
            name=self.name,
            steps=self.step_configurations,
            start_timeout=self.start_timeout,
            step_timeout=self.step_timeout,
            job_timeout=self.job_timeout,
        )


def _check_unique_tags(
    entries: list[JobConfigurationFileEntry],
) -> list[JobConfigurationFileEntry]:
    repeated = _repeated(entry.tag for entry in entries)
    if repeated:
        raise ValueError(f"configuration tags must be unique within a file; repeated: {repeated}")
    return entries


class JobConfigurationFile(Schema):
    """Job configurations to create or version: unchanged ones are left as they are."""

    job_configs: Annotated[
        list[JobConfigurationFileEntry],
        Field(min_length=1, max_length=MAX_FILE_CONFIGURATIONS),
        AfterValidator(_check_unique_tags),
    ]

    def configurations(self) -> list[JobConfigurationCreate]:
        return [entry.to_create() for entry in self.job_configs]


def file_json_schema() -> dict[str, Any]:
    """The JSON Schema of the file format, for editors to validate files against."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **JobConfigurationFile.model_json_schema(),
    }
