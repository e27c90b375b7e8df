"""What `Tracker` and `AsyncTracker` share: their options, the spool, how an event and a job
creation are made, a job's state, the configuration file, and the exit hook. Only the transport
(blocking or awaited) and the sender (a thread or a task) differ between them."""

from __future__ import annotations

import atexit
import importlib
import json
import logging
import os
import random
import traceback
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import httpx

from trackerapi.courier import ErrorCallback
from trackerapi.errors import ConfigurationError, TrackerUnavailable
from trackerapi.models import ConfigFile, Event, EventKind, JobConfig, JobState
from trackerapi.spool import Spool, default_spool_path, key_id
from trackerapi.transport import RetryPolicy
from trackerapi.worker import Batches

# The package's version, written here only (the build reads it from this line).
__version__ = "1.1.0"

logger = logging.getLogger("trackerapi")

Mode = Literal["background", "sync"]
DEFAULT_URL = "http://127.0.0.1:8000"
# What the API takes: messages up to 4,000 characters, metadata up to 16 KiB.
MAX_MESSAGE = 4000
MAX_TRACEBACK_BYTES = 8 * 1024
ConfigSource = str | Path | ConfigFile | JobConfig | Sequence[JobConfig]


class Settings:
    """A tracker's options, read and checked once (the environment fills what is not given)."""

    def __init__(
        self,
        api_key: str | None,
        base_url: str | None,
        *,
        mode: Mode,
        timeout: float,
        retry: RetryPolicy | None,
        spool: str | Path | Literal[False] | None,
        strict: bool,
        on_error: ErrorCallback | None,
        max_queue: int,
        max_batch: int,
        max_batch_bytes: int,
        linger: float,
        exit_timeout: float,
    ) -> None:
        if mode not in ("background", "sync"):
            raise ConfigurationError(f"mode must be 'background' or 'sync', not {mode!r}")
        if not 1 <= max_batch <= 1000:
            raise ConfigurationError("max_batch must be 1 to 1,000 (the API's batch limit)")
        if max_queue < 1:
            raise ConfigurationError("max_queue must be at least 1")
        self.api_key = api_key or os.environ.get("TRACKER_API_KEY")
        self.base_url = (base_url or os.environ.get("TRACKER_URL") or DEFAULT_URL).rstrip("/")
        self.mode: Mode = mode
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.strict = strict
        self.on_error = on_error
        self.exit_timeout = exit_timeout
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.linger = linger
        self.delivery = {
            "on_error": on_error,
            "max_batch": max_batch,
            "max_batch_bytes": max_batch_bytes,
            "key": key_id(self.api_key),
        }
        self.spool = open_spool(spool)

    def batches(self) -> Batches:
        """A new queue for a sender, cut into batches by these options."""
        return Batches(max_queue=self.max_queue, max_batch=self.max_batch, linger=self.linger)

    def http(self, *, timeout: float | None = None, retry: RetryPolicy | None = None) -> Any:
        """The transport's options (narrower ones for the exit hook)."""
        return {
            "api_key": self.api_key,
            "timeout": self.timeout if timeout is None else timeout,
            "retry": retry or self.retry,
            "user_agent": f"trackerapi/{__version__} httpx/{httpx.__version__}",
        }


def open_spool(spool: str | Path | Literal[False] | None) -> Spool | None:
    if spool is False:
        return None
    path = Path(spool or os.environ.get("TRACKER_SPOOL") or default_spool_path())
    try:
        return Spool(path)
    except Exception as error:  # OSError (a read-only home), sqlite3.Error, ...
        logger.warning("no spool at %s (%s): an outage will lose events", path, error)
        return None


def job_body(
    provider_job_id: str,
    *,
    tag: str,
    customer_id: int | None,
    version: int | None,
    metadata: dict[str, Any] | None,
) -> str:
    body: dict[str, Any] = {"provider_job_id": provider_job_id, "tag": tag}
    if customer_id is not None:
        body["customer_id"] = customer_id
    if version is not None:
        body["version"] = version
    if metadata is not None:
        body["metadata"] = metadata
    return json.dumps(body, separators=(",", ":"))


class EventIds:
    """Event ids: 128 random bits from a generator of the client's own, seeded from the system's
    entropy. Not os.urandom per event: that system call releases the interpreter lock, and with
    several threads stepping, the caller waited for the others to hand it back (hundreds of
    microseconds at p99). Not the `random` module's generator either: a script that seeds it
    would repeat its ids, run after run.

    A copy of the process must not repeat the ids of the process it was copied from: the API
    would take a different event with the same id for a resend and drop it. Every fork gives
    the copy a new pid, Python's own or not (a pre-forking server's C fork() runs none of
    Python's fork hooks), so a changed pid reseeds. A Lambda SnapStart snapshot restored keeps
    its pid: its after-restore hook reseeds."""

    def __init__(self) -> None:
        self._random = random.Random()
        self._pid = os.getpid()

    def reseed(self) -> None:
        self._random.seed()
        self._pid = os.getpid()

    def new(self) -> str:
        if os.getpid() != self._pid:
            self.reseed()
        return f"{self._random.getrandbits(128):032x}"


_ids = EventIds()
try:
    _snapshots = importlib.import_module("snapshot_restore_py")  # in Lambda's Python runtimes
except ImportError:
    pass
else:
    _snapshots.register_after_restore(_ids.reseed)


def make_event(
    provider_job_id: str,
    kind: EventKind,
    name: str | None,
    message: str | None,
    metadata: dict[str, Any] | None,
    event_id: str | None,
    occurred_at: datetime | None,
) -> Event:
    """A new event: its own id (128 random bits) and time unless given."""
    return Event(
        provider_job_id=provider_job_id,
        kind=kind,
        event_id=event_id or _ids.new(),
        occurred_at=occurred_at or datetime.now(timezone.utc),
        name=name,
        message=message,
        metadata=metadata,
    )


def raise_if_strict(settings: Settings, message: str) -> None:
    if settings.strict:
        raise TrackerUnavailable(message)


class JobView:
    """A job's identity and the API's latest answer about it, for both kinds of handle."""

    def __init__(self, provider_job_id: str, mode: Mode) -> None:
        self.provider_job_id = provider_job_id
        self.mode: Mode = mode
        self.state: JobState | None = None

    @property
    def id(self) -> int | None:
        return self.state.id if self.state else None

    @property
    def progress(self) -> float | None:
        return self.state.progress if self.state else None

    @property
    def status(self) -> str | None:
        return self.state.status if self.state else None

    @property
    def cost(self) -> Any:
        return self.state.cost if self.state else None


def is_clean_exit(exc: BaseException) -> bool:
    return isinstance(exc, SystemExit) and exc.code in (None, 0)


def exception_report(exc: BaseException) -> tuple[str, dict[str, Any]]:
    """The error event's message, and metadata with the exception's type and the end of its
    traceback, within the API's limits."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    text = "".join(lines)
    encoded = text.encode()
    if len(encoded) > MAX_TRACEBACK_BYTES:
        text = "..." + encoded[-MAX_TRACEBACK_BYTES:].decode(errors="ignore")
    message = f"{type(exc).__name__}: {exc}"[:MAX_MESSAGE]
    return message, {
        "exception": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "traceback": text,
    }


def config_file(source: ConfigSource) -> ConfigFile:
    """What a push sends: a file (validated before anything is sent), or models."""
    if isinstance(source, (str, Path)):
        return ConfigFile.read(source)
    if isinstance(source, ConfigFile):
        return source
    if isinstance(source, JobConfig):
        return ConfigFile(job_configs=[source])
    return ConfigFile(job_configs=list(source))


def config_schema() -> dict[str, Any]:
    """The JSON Schema of the configuration file, for editors."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **ConfigFile.model_json_schema(by_alias=True),
    }


class Closable:
    """A tracker the exit hook must close: `close_at_exit` delivers what it still holds within
    its exit_timeout, spooling the rest."""

    def close_at_exit(self) -> None:
        raise NotImplementedError


# Interpreter exit: every open tracker flushes, within its exit_timeout, and spools what is
# left. Strong references until closed: a tracker the script dropped still has its queue.
open_trackers: set[Closable] = set()


@atexit.register
def _close_open_trackers() -> None:
    for tracker in list(open_trackers):
        try:
            tracker.close_at_exit()
        except Exception:
            logger.exception("closing a tracker at exit failed")
