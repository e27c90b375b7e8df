"""SnapStart's runtime hooks for the API function (template.yaml, `ApiSnapStart`).

With SnapStart, Lambda runs the init phase once, when a version is published, and starts each
new instance from a snapshot of it. So before the snapshot, the database connections are
closed (the import makes none, but one in the snapshot would be shared by every copy); after
each restore, what must differ between copies is made anew: Python's `random` state (reseeded
from the operating system) and the API keys this process trusted (trusted until a time of the
clock before the snapshot). The secrets read at init stay: SECRET_KEY does not change, a
database password RDS has rotated since is read again at the first refused connection
(config/database.py), with credentials fetched at that moment (config/secrets.py), and a new
WEBHOOK_SECRET_KEYS reaches the API with a new published version (README, "Signing secrets at
rest"): reading it at each restore would cost every restored start a request.

The AWS base image's runtime interface client runs the hooks registered with its
`snapshot_restore_py`; outside Lambda nothing is registered.
"""

import logging
import random

from app.services.api_keys import forget_verified_keys
from config import config
from config.log import LOGGER_NAME

logger = logging.getLogger(f"{LOGGER_NAME}.snapstart")


def before_snapshot() -> None:
    config.database.dispose()
    logger.info("Before the snapshot: database connections closed")


def after_restore() -> None:
    random.seed()
    forget_verified_keys()
    logger.info("Restored from a snapshot: random state reseeded, trusted API keys forgotten")


def register_hooks() -> None:
    """Register the hooks with the runtime, where it has the library for them."""
    try:
        from snapshot_restore_py import (  # type: ignore[import-untyped]
            register_after_restore,
            register_before_snapshot,
        )
    except ImportError:  # not the AWS runtime: there is no snapshot to take
        return
    register_before_snapshot(before_snapshot)
    register_after_restore(after_restore)
