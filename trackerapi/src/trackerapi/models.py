"""Typed shapes of what the client sends and what the API answers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, ValidationError

from trackerapi.errors import ConfigurationError

# The API's limits for configurations, so a bad file is refused before anything is sent.
Tag = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^\x00]*$"),
]
Points = Annotated[StrictInt, Field(ge=1, le=1_000_000)]
Cost = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=4, allow_inf_nan=False)]

EventKind = Literal["step", "error", "info"]
JobStatus = Literal["pending", "running", "completed", "failed", "stalled", "cancelled"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class StepConfig(_Model):
    """One step of a job configuration: its weight in progress (points) and its price (cost)."""

    tag: Tag
    name: Name
    points: Points
    cost: Cost = Decimal(0)


class JobConfig(_Model):
    """A job configuration: a tag, a name and its steps in order."""

    tag: Tag
    name: Name
    steps: list[StepConfig] = Field(
        min_length=1, max_length=500, serialization_alias="step_configurations",
        validation_alias="step_configurations",
    )  # fmt: skip


class ConfigFile(_Model):
    """The configuration file format: what `PUT /job-configurations` takes."""

    job_configs: list[JobConfig] = Field(min_length=1, max_length=100)

    @classmethod
    def read(cls, path: str | Path) -> ConfigFile:
        """A JSON file, or YAML when the name ends .yaml or .yml (needs PyYAML)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigurationError(f"cannot read {path}: {error}") from None
        try:
            if path.suffix.lower() in {".yaml", ".yml"}:
                return cls.model_validate(_load_yaml(path, text))
            return cls.model_validate(json.loads(text))
        except json.JSONDecodeError as error:
            raise ConfigurationError(f"{path} is not valid JSON: {error}") from None
        except ValidationError as error:
            problems = [
                f"{'.'.join(str(part) for part in item['loc']) or 'file'}: {item['msg']}"
                for item in error.errors(include_url=False)
            ]
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise ConfigurationError(
                f"{path} is not valid: {'; '.join(problems[:3])}{more}"
            ) from None

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def _load_yaml(path: Path, text: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigurationError("YAML files need PyYAML: pip install 'trackerapi[yaml]'") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigurationError(
            f"{path} is not valid YAML: {' '.join(str(error).split())}"
        ) from None


class PushOutcome(BaseModel):
    """What a push did to one configuration."""

    tag: str
    version: int
    result: Literal["created", "unchanged", "new_version"]


class JobState(BaseModel):
    """A job as the API last described it."""

    model_config = ConfigDict(extra="ignore")

    id: int
    provider_job_id: str
    customer_id: int
    tag: str
    version: int
    status: JobStatus
    progress: float
    completed_points: int
    total_points: int
    steps_completed: int
    step_count: int
    cost: Decimal
    event_count: int
    error_count: int
    unresolved_error_count: int
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None


class Event:
    """One event as the client made it: its `event_id` and `occurred_at` are fixed here, once,
    and sent unchanged on every retry and resend.

    Built in the caller's thread, so it does only what must happen there: the metadata is
    serialised now (changing the dict afterwards changes nothing sent, and a value JSON cannot
    hold raises TypeError to the caller) and a naive `occurred_at` is refused (ValueError); the
    rest of the JSON is written by the sender, from values that cannot change (read-only)."""

    __slots__ = (
        "_content",
        "_event_id",
        "_kind",
        "_message",
        "_metadata",
        "_metadata_json",
        "_name",
        "_occurred_at",
        "_provider_job_id",
    )  # fmt: skip

    def __init__(
        self,
        *,
        provider_job_id: str,
        kind: EventKind,
        event_id: str,
        occurred_at: datetime,
        name: str | None = None,
        message: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if occurred_at.tzinfo is None or occurred_at.utcoffset() is None:
            raise ValueError(
                f"occurred_at must be timezone-aware, not the naive {occurred_at.isoformat()}: "
                "a naive time names no instant (use datetime.now(timezone.utc), say)"
            )
        self._provider_job_id = provider_job_id
        self._kind = kind
        self._event_id = event_id
        self._occurred_at = occurred_at
        self._name = name
        self._message = message
        self._metadata = metadata
        self._content: str | None = None
        self._metadata_json: str | None = None
        if metadata is not None:
            try:
                self._metadata_json = json.dumps(
                    metadata, separators=(",", ":"), ensure_ascii=False
                )
            except (TypeError, ValueError) as error:
                raise TypeError(f"the event's metadata must be JSON: {error}") from None

    @property
    def provider_job_id(self) -> str:
        return self._provider_job_id

    @property
    def kind(self) -> EventKind:
        return self._kind

    @property
    def event_id(self) -> str:
        return self._event_id

    @property
    def occurred_at(self) -> datetime:
        return self._occurred_at

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def message(self) -> str | None:
        return self._message

    @property
    def metadata(self) -> dict[str, Any] | None:
        """The dict given (what is sent was serialised from it when the event was made)."""
        return self._metadata

    def __repr__(self) -> str:
        return (
            f"Event(kind={self.kind!r}, provider_job_id={self.provider_job_id!r}, "
            f"name={self.name!r}, event_id={self.event_id!r})"
        )

    @property
    def content(self) -> str:
        """The batch item as sent (written once, by whoever asks first)."""
        if self._content is None:
            self._content = self.json(with_job=True)
        return self._content

    def json(self, *, with_job: bool) -> str:
        """The event as an item of `POST /events/batch` (`with_job`), or as the body of
        `POST /jobs/{id}/events`."""
        body: dict[str, Any] = {"provider_job_id": self.provider_job_id} if with_job else {}
        body.update(
            kind=self.kind, event_id=self.event_id, occurred_at=self.occurred_at.isoformat()
        )
        if self.name is not None:
            body["name"] = self.name
        if self.message is not None:
            body["message"] = self.message
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        if self._metadata_json is None:
            return text
        return f'{text[:-1]},"metadata":{self._metadata_json}}}'


@dataclass(frozen=True)
class Rejection:
    """Something the API refused for good, given to `on_error`: the request body (an event or a
    job creation) and the API's reason."""

    kind: Literal["event", "job"]
    body: dict[str, Any]
    reason: str
