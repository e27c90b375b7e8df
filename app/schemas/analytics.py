from datetime import datetime
from decimal import Decimal

from pydantic import Field

from app.models import JobStatus
from app.schemas.base import Schema


class StatusCount(Schema):
    status: JobStatus
    count: int


class ConfigurationCount(Schema):
    tag: str
    version: int
    count: int


class PeriodCount(Schema):
    period_start: datetime = Field(description="Start of the period (UTC), inclusive.")
    count: int


class JobAnalytics(Schema):
    total: int = Field(description="Jobs created in [from, to).")
    by_status: list[StatusCount] = Field(description="Every status, zeros included.")
    by_configuration: list[ConfigurationCount] = Field(
        description="Configuration versions with at least one job, by tag and version."
    )
    by_period: list[PeriodCount] = Field(
        description="Every period overlapping [from, to), zeros included; the first and last "
        "count only the jobs inside the range."
    )


class StepAnalytics(Schema):
    position: int
    tag: str
    name: str
    jobs_reached: int = Field(
        description="Jobs that completed this step or reported an error at it."
    )
    completions: int = Field(description="Jobs that completed this step.")
    errors: int = Field(description="Error events naming this step.")
    error_rate: float | None = Field(
        description="errors / (completions + errors); null when both are 0."
    )
    median_seconds: float | None = Field(
        description="Median time from the job's previous completed step (or its creation) to "
        "this step's completion; estimated within 0.5% (or 1 ms) of the exact value (when "
        "the times around it have one sign: only a client clock behind the server's makes a "
        "time negative)."
    )
    p95_seconds: float | None = Field(
        description="95th percentile of the same time, estimated the same way."
    )


class StepFunnel(Schema):
    tag: str
    version: int
    configuration_id: int
    jobs: int = Field(description="Jobs of this version created in [from, to).")
    steps: list[StepAnalytics] = Field(description="Every step of the version, in order.")


class CustomerAnalytics(Schema):
    customer_id: int
    name: str
    jobs: int = Field(description="Jobs created in [from, to).")
    completed: int = Field(description="Of those, the jobs now completed.")
    failed: int = Field(description="Of those, the jobs now failed.")
    error_rate: float | None = Field(description="failed / jobs; null when there are no jobs.")
    cost: Decimal = Field(description="Sum of the costs of the steps completed in [from, to).")
    last_activity: datetime | None = Field(
        description="The latest event of the jobs created in [from, to)."
    )


class CustomersAnalytics(Schema):
    customers: list[CustomerAnalytics] = Field(description="Every customer, by name.")
