"""`Tracker`: the client a script holds, and `Job`, the block a job's events are reported in."""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx

from trackerapi import core
from trackerapi.core import ConfigSource, JobView, Mode, Settings
from trackerapi.core import __version__ as __version__  # where 1.0.0 had it
from trackerapi.courier import JSON_HEADERS, Courier, ErrorCallback
from trackerapi.errors import CLOSED, ApiError, EventRejected, TrackerError, TrackerUnavailable
from trackerapi.models import Event, EventKind, JobState, PushOutcome
from trackerapi.transport import RetryPolicy, Transport
from trackerapi.worker import Worker

logger = logging.getLogger("trackerapi")


class Tracker(core.Closable):
    """The API's client. Constructing it sends nothing; it is thread-safe.

    `api_key` and `base_url` default to TRACKER_API_KEY and TRACKER_URL; `spool` to
    TRACKER_SPOOL, else the user's cache directory (`spool=False`: none, so an outage loses
    events). Pushing configurations needs an admin's key with the `configure` scope.
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
    ) -> None:
        self.settings = Settings(
            api_key, base_url, mode=mode, timeout=timeout, retry=retry, spool=spool,
            strict=strict, on_error=on_error, max_queue=max_queue, max_batch=max_batch,
            max_batch_bytes=max_batch_bytes, linger=linger, exit_timeout=exit_timeout,
        )  # fmt: skip
        self.api_key = self.settings.api_key
        self.base_url = self.settings.base_url
        self.mode: Mode = mode
        self.strict = strict
        self.exit_timeout = exit_timeout
        self.spool = self.settings.spool
        self._transport = Transport(self.base_url, **self.settings.http())
        self._courier = Courier(self._transport, self.spool, **self.settings.delivery)
        self._lock = threading.Lock()
        self._worker: Worker | None = None
        self._worker_pid = 0
        self._closed = False
        self.configs = Configs(self)
        core.open_trackers.add(self)

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
        content = core.job_body(
            provider_job_id, tag=tag, customer_id=customer_id, version=version, metadata=metadata
        )
        job = Job(self, provider_job_id, mode or self.mode)
        job.state = self._create_job(provider_job_id, content, job.mode)
        return job

    def job_handle(self, provider_job_id: str, *, mode: Mode | None = None) -> Job:
        """A handle to report events for a job created earlier (elsewhere), without a request."""
        return Job(self, provider_job_id, mode or self.mode)

    def _create_job(self, provider_job_id: str, content: str, mode: Mode) -> JobState | None:
        if self._closed:
            raise TrackerError(CLOSED)
        courier = self._courier
        # Older entries go first; while they cannot be delivered, this creation joins them.
        if courier.pending() and not courier.drain():
            courier.keep([("job", content)])
            core.raise_if_strict(self.settings, f"job {provider_job_id} was spooled")
            return None
        try:
            try:
                response = self._transport.request(
                    "POST", "/jobs", content=content.encode(), headers=JSON_HEADERS,
                    retry=courier.retry_policy(),
                )  # fmt: skip
            except ApiError as error:
                # A background job must not stop the script for the API's failure (or a
                # revoked key); a sync caller sees the error.
                outage = courier.unavailable(error)
                if mode == "sync" or outage is None:
                    raise
                raise outage from error
        except TrackerUnavailable as error:
            courier.mark_down(error)
            if self.strict:
                raise
            courier.keep([("job", content)])
            return None
        return JobState.model_validate(response.json())

    def get_job(self, provider_job_id: str) -> JobState:
        """The job as the API has it now (needs the `read` scope)."""
        response = self.request("GET", f"/jobs/by-provider-id/{provider_job_id}")
        return JobState.model_validate(response.json())

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Any API route, with this client's key, timeouts and retries; raises ApiError for a
        refusal and TrackerUnavailable when the API cannot be reached."""
        if self._closed:
            raise TrackerError(CLOSED)
        return self._transport.request(method, path, **kwargs)

    # Sending ------------------------------------------------------------------------------------

    def _enqueue(self, event: Event) -> None:
        worker = self._worker
        if worker is None or self._worker_pid != os.getpid():
            worker = self._start_worker()
        worker.put(event)

    def _start_worker(self) -> Worker:
        with self._lock:
            if self._closed:
                raise TrackerError(CLOSED)
            # A forked child inherits the queue but not the thread: it starts its own.
            if self._worker is None or self._worker_pid != os.getpid():
                self._worker = Worker(self._courier, self.settings.batches())
                self._worker_pid = os.getpid()
            return self._worker

    def _send_now(self, event: Event, *, job_id: int | None) -> dict[str, Any] | None:
        """Deliver one event before answering: the API's answer (with the job's new state), or
        None when it went to the spool (unreachable API, or older entries still waiting)."""
        courier = self._courier
        if job_id is None or courier.pending():
            if not courier.deliver([("event", event.content)]):
                core.raise_if_strict(self.settings, f"event {event.event_id} was spooled")
            return None
        try:
            response = self._transport.request(
                "POST", f"/jobs/{job_id}/events",
                content=event.json(with_job=False).encode(), headers=JSON_HEADERS,
                retry=courier.retry_policy(),
            )  # fmt: skip
        except ApiError as error:
            raise EventRejected(error.status_code, error.detail) from None
        except TrackerUnavailable as error:
            courier.mark_down(error)
            if self.strict:
                raise
            courier.keep([("event", event.content)])
            return None
        answer: dict[str, Any] = response.json()
        return answer

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Deliver everything queued so far, and what waits in the spool. True when all of it
        reached the API within `timeout`; False when some waits in the spool (with
        `strict=True`, TrackerUnavailable instead)."""
        if self._closed:
            raise TrackerError(CLOSED)
        worker = self._worker
        if worker is not None and self._worker_pid == os.getpid():
            delivered = worker.flush(timeout)
        else:
            delivered = self._courier.drain()
        if not delivered:
            core.raise_if_strict(self.settings, "not everything was delivered: the rest is spooled")
        return delivered

    def close(self, timeout: float | None = None) -> bool:
        """Flush (within `timeout`, default `exit_timeout`), spool what is left, and release the
        connections; returns within `timeout`. Called at interpreter exit for every tracker
        not closed by then."""
        with self._lock:
            if self._closed:
                return True
            self._closed = True
        wait = self.exit_timeout if timeout is None else timeout
        worker, self._worker = self._worker, None
        if worker is not None and self._worker_pid == os.getpid():
            delivered = worker.stop(wait)
        else:
            delivered = self._courier.drain()
        self._transport.close()
        if self.spool is not None:
            self.spool.close()
        core.open_trackers.discard(self)
        return delivered

    def close_at_exit(self) -> None:
        self.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Job(JobView):
    """A job's handle: report its steps, errors and notes. `progress`, `status` and `cost`
    follow the API's latest answer (each event's in sync mode; a re-read after the block's
    flush in background mode, when the key has the `read` scope)."""

    def __init__(self, tracker: Tracker, provider_job_id: str, mode: Mode) -> None:
        super().__init__(provider_job_id, mode)
        self.tracker = tracker

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
        event = core.make_event(
            self.provider_job_id, kind, name, message, metadata, event_id, occurred_at
        )
        if self.mode == "background":
            self.tracker._enqueue(event)
        elif self.tracker._closed:
            raise TrackerError(CLOSED)
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
            if exc is not None and not core.is_clean_exit(exc):
                message, metadata = core.exception_report(exc)
                self.error(message, metadata=metadata)
            if self.mode == "background":
                self.flush(timeout=self.tracker.exit_timeout)
        except TrackerError as error:
            if exc is None:
                raise
            # The block's own exception matters more than the report of it.
            logger.warning("could not report %r for job %s: %s", exc, self.provider_job_id, error)


class Configs:
    """Job configurations: push a file's or models' content, or read the file format."""

    def __init__(self, tracker: Tracker) -> None:
        self._tracker = tracker

    def push(self, source: ConfigSource) -> list[PushOutcome]:
        """Create or version each configuration (unchanged ones stay as they are); answers what
        happened to each. Needs an admin's API key with the `configure` scope."""
        body = core.config_file(source).body()
        response = self._tracker.request("PUT", "/job-configurations", json=body)
        return [PushOutcome.model_validate(item) for item in response.json()]

    @staticmethod
    def schema() -> dict[str, Any]:
        """The JSON Schema of the configuration file, for editors."""
        return core.config_schema()
