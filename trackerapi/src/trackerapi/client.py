"""`Tracker`: the client a script holds, and `Job`, the block a job's events are reported in."""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import traceback
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx

from trackerapi.courier import Courier, ErrorCallback
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
    EventKind,
    JobConfig,
    JobState,
    PushOutcome,
)
from trackerapi.spool import Spool, default_spool_path, key_id
from trackerapi.transport import RetryPolicy, Transport
from trackerapi.worker import Worker

__version__ = "1.0.0"

logger = logging.getLogger("trackerapi")

Mode = Literal["background", "sync"]
DEFAULT_URL = "http://127.0.0.1:8000"
# What the API takes: messages up to 4,000 characters, metadata up to 16 KiB.
MAX_MESSAGE = 4000
MAX_TRACEBACK_BYTES = 8 * 1024
JSON_HEADERS = {"Content-Type": "application/json"}


class Tracker:
    """The API's client. Constructing it sends nothing; it is thread-safe.

    `api_key` and `base_url` default to TRACKER_API_KEY and TRACKER_URL; `spool` to
    TRACKER_SPOOL, else the user's cache directory (`spool=False`: none, so an outage loses
    events). Administrators' calls (`configs.push`) log in with `email` and `password`
    (TRACKER_EMAIL, TRACKER_PASSWORD), since the API takes no API key for them.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        mode: Mode = "background",
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        spool: str | Path | Literal[False] | None = None,
        strict: bool = False,
        on_error: ErrorCallback | None = None,
        max_queue: int = 10_000,
        max_batch: int = 500,
        max_batch_bytes: int = 1024 * 1024,
        linger: float = 0.05,
        exit_timeout: float = 10.0,
        email: str | None = None,
        password: str | None = None,
    ) -> None:
        if mode not in ("background", "sync"):
            raise ConfigurationError(f"mode must be 'background' or 'sync', not {mode!r}")
        if not 1 <= max_batch <= 1000:
            raise ConfigurationError("max_batch must be 1 to 1,000 (the API's batch limit)")
        self.api_key = api_key or os.environ.get("TRACKER_API_KEY")
        self.base_url = (base_url or os.environ.get("TRACKER_URL") or DEFAULT_URL).rstrip("/")
        self.mode: Mode = mode
        self.strict = strict
        self.exit_timeout = exit_timeout
        self._email = email or os.environ.get("TRACKER_EMAIL")
        self._password = password or os.environ.get("TRACKER_PASSWORD")
        self._bearer: str | None = None
        self._queue_options = {"max_queue": max_queue, "max_batch": max_batch, "linger": linger}
        self._transport = Transport(
            self.base_url,
            api_key=self.api_key,
            timeout=timeout,
            retry=retry or RetryPolicy(),
            user_agent=f"trackerapi/{__version__} httpx/{httpx.__version__}",
        )
        self.spool = _open_spool(spool)
        self._courier = Courier(
            self._transport,
            self.spool,
            on_error=on_error,
            max_batch=max_batch,
            max_batch_bytes=max_batch_bytes,
            key=key_id(self.api_key),
        )
        self._lock = threading.Lock()
        self._worker: Worker | None = None
        self._worker_pid = 0
        self._closed = False
        self.configs = Configs(self)
        _open_trackers.add(self)

    # Jobs ---------------------------------------------------------------------------------------

    def job(
        self,
        provider_job_id: str,
        *,
        tag: str,
        customer_id: int | None = None,
        version: int | None = None,
        metadata: dict[str, Any] | None = None,
        mode: Mode | None = None,
    ) -> Job:
        """Create the job (or find it: the create is idempotent) and answer its handle, to use
        as `with tracker.job(...) as job:`. Unreachable API: the creation is spooled."""
        body: dict[str, Any] = {"provider_job_id": provider_job_id, "tag": tag}
        if customer_id is not None:
            body["customer_id"] = customer_id
        if version is not None:
            body["version"] = version
        if metadata is not None:
            body["metadata"] = metadata
        job = Job(self, provider_job_id, mode or self.mode)
        job.state = self._create_job(body, job.mode)
        return job

    def job_handle(self, provider_job_id: str, *, mode: Mode | None = None) -> Job:
        """A handle to report events for a job created earlier (elsewhere), without a request."""
        return Job(self, provider_job_id, mode or self.mode)

    def _create_job(self, body: dict[str, Any], mode: Mode) -> JobState | None:
        content = json.dumps(body, separators=(",", ":"))
        # Older entries go first; while they cannot be delivered, this creation joins them.
        if self._courier.pending() and not self._courier.drain():
            self._courier.keep([("job", content)])
            self._raise_if_strict(f"job {body['provider_job_id']} was spooled")
            return None
        try:
            try:
                response = self._transport.request(
                    "POST", "/jobs", content=content.encode(), headers=JSON_HEADERS,
                    retry=self._courier.retry_policy(),
                )  # fmt: skip
            except ApiError as error:
                # A background job must not stop the script for the API's failure (or a
                # revoked key); a sync caller sees the error.
                outage = self._courier.unavailable(error)
                if mode == "sync" or outage is None:
                    raise
                raise outage from error
        except TrackerUnavailable as error:
            self._courier.mark_down(error)
            if self.strict:
                raise
            self._courier.keep([("job", content)])
            return None
        return JobState.model_validate(response.json())

    def get_job(self, provider_job_id: str) -> JobState:
        """The job as the API has it now (needs the `read` scope)."""
        response = self._transport.request("GET", f"/jobs/by-provider-id/{provider_job_id}")
        return JobState.model_validate(response.json())

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Any API route, with this client's key, timeouts and retries; raises ApiError for a
        refusal and TrackerUnavailable when the API cannot be reached."""
        return self._transport.request(method, path, **kwargs)

    # Sending ------------------------------------------------------------------------------------

    def _enqueue(self, event: Event) -> None:
        worker = self._worker
        if worker is None or self._worker_pid != os.getpid():
            worker = self._start_worker()
            if worker is None:  # closed: deliver it now instead
                self._send_now(event, job_id=None)
                return
        worker.put(event)

    def _start_worker(self) -> Worker | None:
        with self._lock:
            if self._closed:
                return None
            # A forked child inherits the queue but not the thread: it starts its own.
            if self._worker is None or self._worker_pid != os.getpid():
                self._worker = Worker(self._courier, **self._queue_options)  # type: ignore[arg-type]
                self._worker_pid = os.getpid()
            return self._worker

    def _send_now(self, event: Event, *, job_id: int | None) -> dict[str, Any] | None:
        """Deliver one event before answering: the API's answer (with the job's new state), or
        None when it went to the spool (unreachable API, or older entries still waiting)."""
        content = event.content
        if job_id is None or self._courier.pending():
            if not self._courier.deliver([("event", content)]):
                self._raise_if_strict(f"event {event.event_id} was spooled")
            return None
        own = json.dumps(event.body(with_job=False), separators=(",", ":"), ensure_ascii=False)
        try:
            response = self._transport.request(
                "POST", f"/jobs/{job_id}/events", content=own.encode(), headers=JSON_HEADERS,
                retry=self._courier.retry_policy(),
            )  # fmt: skip
        except ApiError as error:
            raise EventRejected(error.status_code, error.detail) from None
        except TrackerUnavailable as error:
            self._courier.mark_down(error)
            if self.strict:
                raise
            self._courier.keep([("event", content)])
            return None
        answer: dict[str, Any] = response.json()
        return answer

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Deliver everything queued so far, and what waits in the spool. True when all of it
        reached the API within `timeout`; False when some waits in the spool (with
        `strict=True`, TrackerUnavailable instead)."""
        worker = self._worker
        if worker is not None and self._worker_pid == os.getpid() and not self._closed:
            delivered = worker.flush(timeout)
        else:
            delivered = self._courier.drain()
        if not delivered:
            self._raise_if_strict("not everything was delivered: the rest is spooled")
        return delivered

    def close(self, timeout: float | None = None) -> bool:
        """Flush (within `timeout`, default `exit_timeout`), spool what is left, and release the
        connections. Called at interpreter exit for every tracker not closed by then."""
        with self._lock:
            if self._closed:
                return True
            self._closed = True
        wait = self.exit_timeout if timeout is None else timeout
        worker = self._worker
        if worker is not None and self._worker_pid == os.getpid():
            delivered = worker.stop(wait)
        else:
            delivered = self._courier.drain()
        self._transport.close()
        if self.spool is not None:
            self.spool.close()
        _open_trackers.discard(self)
        return delivered

    def _raise_if_strict(self, message: str) -> None:
        if self.strict:
            raise TrackerUnavailable(message)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Job:
    """A job's handle: report its steps, errors and notes. `progress`, `status` and `cost`
    follow the API's latest answer (each event's in sync mode; a re-read after the block's
    flush in background mode, when the key has the `read` scope)."""

    def __init__(self, tracker: Tracker, provider_job_id: str, mode: Mode) -> None:
        self.tracker = tracker
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

    def step(
        self,
        tag: str,
        *,
        metadata: dict[str, Any] | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> Event:
        """Report that the step `tag` finished."""
        return self._report("step", tag, None, metadata, event_id, occurred_at)

    def error(
        self,
        message: str,
        *,
        step: str | None = None,
        metadata: dict[str, Any] | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> Event:
        """Report a failure, at `step` if given (a later `step()` of that tag resolves it)."""
        return self._report("error", step, message, metadata, event_id, occurred_at)

    def info(
        self,
        message: str,
        *,
        metadata: dict[str, Any] | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> Event:
        """Report a note; it changes nothing but the job's deadline."""
        return self._report("info", None, message, metadata, event_id, occurred_at)

    def _report(
        self,
        kind: EventKind,
        name: str | None,
        message: str | None,
        metadata: dict[str, Any] | None,
        event_id: str | None,
        occurred_at: datetime | None,
    ) -> Event:
        event = Event(
            provider_job_id=self.provider_job_id,
            kind=kind,
            event_id=event_id or uuid.uuid4().hex,
            occurred_at=occurred_at or datetime.now(timezone.utc),
            name=name,
            message=message,
            metadata=metadata,
        )
        if self.mode == "background":
            self.tracker._enqueue(event)
        else:
            answer = self.tracker._send_now(event, job_id=self.id)
            if answer is not None:
                self.state = JobState.model_validate(answer["job"])
        return event

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Deliver the tracker's queue (this job's events among them) and re-read the job (not
        when the delivery failed: the re-read would only wait out the same outage)."""
        delivered = self.tracker.flush(timeout)
        if delivered:
            self.refresh()
        return delivered

    def refresh(self) -> None:
        """Re-read the job from the API when that is possible (best effort, never raises for
        an outage or a key without the `read` scope)."""
        if self.state is None:
            return
        try:
            response = self.tracker.request("GET", f"/jobs/{self.state.id}")
        except (ApiError, TrackerUnavailable) as error:
            logger.debug("cannot re-read job %s: %s", self.provider_job_id, error)
            return
        self.state = JobState.model_validate(response.json())

    def __enter__(self) -> Job:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is not None and not _is_clean_exit(exc):
                self.error(
                    f"{exc_type.__name__ if exc_type else 'Exception'}: {exc}"[:MAX_MESSAGE],
                    metadata=_exception_metadata(exc),
                )
            if self.mode == "background":
                self.flush(timeout=self.tracker.exit_timeout)
        except TrackerError as error:
            if exc is None:
                raise
            # The block's own exception matters more than the report of it.
            logger.warning("could not report %r for job %s: %s", exc, self.provider_job_id, error)


def _is_clean_exit(exc: BaseException) -> bool:
    return isinstance(exc, SystemExit) and exc.code in (None, 0)


def _exception_metadata(exc: BaseException) -> dict[str, Any]:
    """The exception's type and the end of its traceback, within the API's metadata limit."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    text = "".join(lines)
    encoded = text.encode()
    if len(encoded) > MAX_TRACEBACK_BYTES:
        text = "..." + encoded[-MAX_TRACEBACK_BYTES:].decode(errors="ignore")
    return {"exception": f"{type(exc).__module__}.{type(exc).__qualname__}", "traceback": text}


class Configs:
    """Job configurations: push a file's or models' content, or read the file format."""

    def __init__(self, tracker: Tracker) -> None:
        self._tracker = tracker

    def push(
        self, source: str | Path | ConfigFile | JobConfig | Sequence[JobConfig]
    ) -> list[PushOutcome]:
        """Create or version each configuration (unchanged ones stay as they are); answers what
        happened to each. Needs an administrator's email and password."""
        if isinstance(source, (str, Path)):
            configs = ConfigFile.read(source)
        elif isinstance(source, ConfigFile):
            configs = source
        elif isinstance(source, JobConfig):
            configs = ConfigFile(job_configs=[source])
        else:
            configs = ConfigFile(job_configs=list(source))
        response = self._tracker.request(
            "PUT", "/job-configurations", json=configs.body(), headers=self._authorization()
        )
        return [PushOutcome.model_validate(item) for item in response.json()]

    @staticmethod
    def schema() -> dict[str, Any]:
        """The JSON Schema of the configuration file, for editors."""
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            **ConfigFile.model_json_schema(by_alias=True),
        }

    def _authorization(self) -> dict[str, str]:
        tracker = self._tracker
        if tracker._bearer is None:
            if not (tracker._email and tracker._password):
                raise ConfigurationError(
                    "pushing configurations needs an administrator: set TRACKER_EMAIL and "
                    "TRACKER_PASSWORD (or pass email= and password=)"
                )
            response = tracker.request(
                "POST",
                "/auth/token",
                data={"username": tracker._email, "password": tracker._password},
            )
            tracker._bearer = str(response.json()["access_token"])
        return {"Authorization": f"Bearer {tracker._bearer}"}


def _open_spool(spool: str | Path | Literal[False] | None) -> Spool | None:
    if spool is False:
        return None
    path = Path(spool or os.environ.get("TRACKER_SPOOL") or default_spool_path())
    try:
        return Spool(path)
    except (OSError, Exception) as error:  # sqlite3.Error, a read-only home, ...
        logger.warning("no spool at %s (%s): an outage will lose events", path, error)
        return None


# Interpreter exit: every open tracker flushes, within its exit_timeout, and spools what is
# left. The sender is a daemon thread, so it still runs while atexit hooks do. Strong references
# until close(): a tracker the script dropped still has its queue to deliver.
_open_trackers: set[Tracker] = set()


@atexit.register
def _close_open_trackers() -> None:
    for tracker in list(_open_trackers):
        try:
            tracker.close()
        except Exception:
            logger.exception("closing a tracker at exit failed")
