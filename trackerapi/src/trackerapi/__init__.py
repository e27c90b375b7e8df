"""The Python client of the Tracker API.

from trackerapi import Tracker

tracker = Tracker()  # TRACKER_API_KEY, TRACKER_URL
with tracker.job("scan-0001", tag="image-analysis", customer_id=1) as job:
    job.step("upload")

`AsyncTracker` is the same for asyncio: `async with tracker.job(...) as job: await job.step(...)`.
"""

from trackerapi.aio import AsyncConfigs, AsyncJob, AsyncTracker
from trackerapi.client import Configs, Job, Tracker
from trackerapi.core import __version__
from trackerapi.errors import (
    ApiError,
    ConfigurationError,
    EventRejected,
    TrackerError,
    TrackerUnavailable,
)
from trackerapi.models import (
    ConfigFile,
    Event,
    JobConfig,
    JobState,
    PushOutcome,
    Rejection,
    StepConfig,
)
from trackerapi.spool import Spool
from trackerapi.transport import RetryPolicy

__all__ = [
    "ApiError",
    "AsyncConfigs",
    "AsyncJob",
    "AsyncTracker",
    "ConfigFile",
    "Configs",
    "ConfigurationError",
    "Event",
    "EventRejected",
    "Job",
    "JobConfig",
    "JobState",
    "PushOutcome",
    "Rejection",
    "RetryPolicy",
    "Spool",
    "StepConfig",
    "Tracker",
    "TrackerError",
    "TrackerUnavailable",
    "__version__",
]
