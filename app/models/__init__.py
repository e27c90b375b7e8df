"""Every model, imported here so `Base.metadata` (and so Alembic) knows them all."""

from app.models.api_key import ApiKey, Scope
from app.models.base import Base
from app.models.customer import Customer
from app.models.event import Event, EventKind
from app.models.job import Job, JobStatus, JobStepCompletion, JobStepError, JobStepTiming
from app.models.job_configuration import JobConfiguration, JobConfigurationStep
from app.models.login_failure import LoginFailure
from app.models.rollup import (
    ALL_CUSTOMERS,
    FunnelErrorRollup,
    FunnelJobRollup,
    FunnelRollupMark,
    FunnelStepRollup,
    Level,
    RollupState,
    UsageLevel,
    UsageRollup,
    UsageRollupMark,
)
from app.models.task_run import TaskOutcome, TaskRun
from app.models.user import Role, User
from app.models.user_session import UserSession
from app.models.webhook import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
)

__all__ = [
    "ALL_CUSTOMERS",
    "ApiKey",
    "Base",
    "Customer",
    "DeliveryStatus",
    "Event",
    "EventKind",
    "FunnelErrorRollup",
    "FunnelJobRollup",
    "FunnelRollupMark",
    "FunnelStepRollup",
    "Job",
    "JobConfiguration",
    "JobConfigurationStep",
    "JobStatus",
    "JobStepCompletion",
    "JobStepError",
    "JobStepTiming",
    "Level",
    "LoginFailure",
    "Role",
    "RollupState",
    "Scope",
    "TaskOutcome",
    "TaskRun",
    "UsageLevel",
    "UsageRollup",
    "UsageRollupMark",
    "User",
    "UserSession",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEventType",
]
