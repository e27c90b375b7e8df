"""The Python client of the Tracker API.

from trackerapi import Tracker

tracker = Tracker()  # TRACKER_API_KEY, TRACKER_URL
with tracker.job("scan-0001", tag="image-analysis", customer_id=1) as job:
    job.step("upload")
"""

from trackerapi.client import Configs, Job, Tracker, __version__
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
