"""`AsyncTracker`: the same client for asyncio programs. Reporting an event never awaits the
network (it is queued for a sender task, as `Tracker` queues it for a thread); the same rules
decide retries, batches, what is dropped and what is spooled, and the spool's SQLite calls run
in a worker thread, off the event loop.

An event queued when the loop ends (`asyncio.run` returned) is not lost: the sender puts what it
held back in the queue when cancelled, and the exit hook delivers the queue, blocking, within
`exit_timeout`, spooling the rest (as `Tracker` does at exit).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Generator
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx

from trackerapi import core
from trackerapi.core import ConfigSource, JobView, Mode, Settings
from trackerapi.courier import JSON_HEADERS, AsyncCourier, Courier, ErrorCallback
from trackerapi.errors import CLOSED, ApiError, EventRejected, TrackerError, TrackerUnavailable
from trackerapi.models import Event, EventKind, JobState, PushOutcome
from trackerapi.transport import AsyncTransport, RetryPolicy, Transport
from trackerapi.worker import AsyncWorker, entries

logger = logging.getLogger("trackerapi")


class AsyncTracker(core.Closable):
    """The API's client for asyncio; the options and rules of `Tracker`.

    `async with AsyncTracker() as tracker:` closes it at the end; `await tracker.aclose()`
    otherwise. It serves one event loop at a time: used from a new loop (another
    `asyncio.run`), it starts a new sender there, and what the old one left is sent first.
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
        self._transport = AsyncTransport(self.base_url, **self.settings.http())
        self._courier = AsyncCourier(self._transport, self.spool, **self.settings.delivery)
        self._batches = self.settings.batches()
        self._worker: AsyncWorker | None = None
        self._closed = False
        self.configs = AsyncConfigs(self)
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
    ) -> AsyncJob:
        """The job's handle; it is created (or found: the create is idempotent) when the block
        starts, `async with tracker.job(...) as job:`, or by `job = await tracker.job(...)`.
        Unreachable API: the creation is spooled."""
        content = core.job_body(
            provider_job_id, tag=tag, customer_id=customer_id, version=version, metadata=metadata
        )
        return AsyncJob(self, provider_job_id, mode or self.mode, creation=content)

    def job_handle(self, provider_job_id: str, *, mode: Mode | None = None) -> AsyncJob:
        """A handle to report events for a job created earlier (elsewhere), without a request."""
        return AsyncJob(self, provider_job_id, mode or self.mode, creation=None)

    async def _create_job(self, provider_job_id: str, content: str, mode: Mode) -> JobState | None:
        if self._closed:
            raise TrackerError(CLOSED)
        courier = self._courier
        # As Tracker's: older entries go first; while they cannot be delivered, this joins them.
        if await courier.pending() and not await courier.drain():
            await courier.keep([("job", content)])
            core.raise_if_strict(self.settings, f"job {provider_job_id} was spooled")
            return None
        try:
            try:
                response = await self._transport.request(
                    "POST", "/jobs", content=content.encode(), headers=JSON_HEADERS,
                    retry=courier.retry_policy(),
                )  # fmt: skip
            except ApiError as error:
                outage = courier.unavailable(error)
                if mode == "sync" or outage is None:
                    raise
                raise outage from error
        except TrackerUnavailable as error:
            courier.mark_down(error)
            if self.strict:
                raise
            await courier.keep([("job", content)])
            return None
        return JobState.model_validate(response.json())

    async def get_job(self, provider_job_id: str) -> JobState:
        """The job as the API has it now (needs the `read` scope)."""
        response = await self.request("GET", f"/jobs/by-provider-id/{provider_job_id}")
        return JobState.model_validate(response.json())

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Any API route, with this client's key, timeouts and retries."""
        if self._closed:
            raise TrackerError(CLOSED)
        return await self._transport.request(method, path, **kwargs)

    # Sending ------------------------------------------------------------------------------------

    def _sender(self) -> AsyncWorker:
        """The sender of the running loop (started at first use)."""
        worker = self._worker
        # A sender cancelled (by a task group, a shutdown) is replaced, as one of an old loop is.
        if (
            worker is not None
            and worker.loop is asyncio.get_running_loop()
            and not worker.task.done()
        ):
            return worker
        if self._closed:
            raise TrackerError(CLOSED)
        self._worker = AsyncWorker(self._courier, self._batches)
        return self._worker

    async def _send_now(self, event: Event, *, job_id: int | None) -> dict[str, Any] | None:
        """As Tracker._send_now, awaited."""
        courier = self._courier
        if job_id is None or await courier.pending():
            if not await courier.deliver([("event", event.content)]):
                core.raise_if_strict(self.settings, f"event {event.event_id} was spooled")
            return None
        try:
            response = await self._transport.request(
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
            await courier.keep([("event", event.content)])
            return None
        answer: dict[str, Any] = response.json()
        return answer

    async def flush(self, timeout: float | None = 30.0) -> bool:
        """Deliver everything queued so far, and what waits in the spool. True when all of it
        reached the API within `timeout`; False when some waits in the spool (with
        `strict=True`, TrackerUnavailable instead)."""
        delivered = await self._sender().flush(timeout)
        if not delivered:
            core.raise_if_strict(self.settings, "not everything was delivered: the rest is spooled")
        return delivered

    async def aclose(self, timeout: float | None = None) -> bool:
        """Flush (within `timeout`, default `exit_timeout`), spool what is left, and release the
        connections; returns within `timeout`."""
        if self._closed:
            return True
        wait = self.exit_timeout if timeout is None else timeout
        worker = self._sender()
        self._closed = True
        self._worker = None
        delivered = await worker.stop(wait)
        await self._transport.aclose()
        if self.spool is not None:
            await asyncio.to_thread(self.spool.close)
        core.open_trackers.discard(self)
        return delivered

    def close_at_exit(self) -> None:
        """The loop is gone (the program returned from asyncio.run without closing the
        tracker): deliver the queue and the spool with a blocking transport, within
        `exit_timeout`, and spool what is left."""
        self._closed = True
        self._worker = None
        events, _ = self._batches.take_all()
        budget = self.exit_timeout
        retry = self.settings.retry
        policy = dataclasses.replace(
            retry,
            deadline=min(retry.deadline, budget),
            max_backoff=min(retry.max_backoff, budget / 4 or 0.01),
        )
        transport = Transport(
            self.base_url,
            **self.settings.http(timeout=min(self.settings.timeout, budget), retry=policy),
        )
        courier = Courier(transport, self.spool, **self.settings.delivery)
        # However many batches are left, no retry starts after the budget.
        deadline = threading.Timer(budget, transport.cancelled.set)
        deadline.daemon = True
        deadline.start()
        try:
            if events:
                courier.deliver(entries(events))
            elif courier.pending():
                courier.drain()
        finally:
            deadline.cancel()
            transport.close()
            if self.spool is not None:
                self.spool.close()
            core.open_trackers.discard(self)

    async def __aenter__(self) -> AsyncTracker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class AsyncJob(JobView):
    """A job's handle for asyncio. `await job.step(...)` queues the event (background mode: it
    awaits only room in a full queue, never the network) or sends it and awaits the answer
    (sync mode)."""

    def __init__(
        self, tracker: AsyncTracker, provider_job_id: str, mode: Mode, *, creation: str | None
    ) -> None:
        super().__init__(provider_job_id, mode)
        self.tracker = tracker
        self._creation = creation

    async def start(self) -> AsyncJob:
        """Create the job (once; a handle made by `job_handle` has nothing to create)."""
        creation, self._creation = self._creation, None
        if creation is not None:
            self.state = await self.tracker._create_job(self.provider_job_id, creation, self.mode)
        return self

    def __await__(self) -> Generator[Any, None, AsyncJob]:
        return self.start().__await__()

    async def step(
        self,
        tag: str,
        *,
        metadata: dict[str, Any] | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> Event:
        """Report that the step `tag` finished."""
        return await self._report("step", tag, None, metadata, event_id, occurred_at)

    async def error(
        self,
        message: str,
        *,
        step: str | None = None,
        metadata: dict[str, Any] | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> Event:
        """Report a failure, at `step` if given (a later `step()` of that tag resolves it)."""
        return await self._report("error", step, message, metadata, event_id, occurred_at)

    async def info(
        self,
        message: str,
        *,
        metadata: dict[str, Any] | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> Event:
        """Report a note; it changes nothing but the job's deadline."""
        return await self._report("info", None, message, metadata, event_id, occurred_at)

    async def _report(
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
        tracker = self.tracker
        if self.mode == "background":
            await tracker._sender().put(event)
            return event
        if tracker._closed:
            raise TrackerError(CLOSED)
        answer = await tracker._send_now(event, job_id=self.id)
        if answer is not None:
            self.state = JobState.model_validate(answer["job"])
        return event

    async def flush(self, timeout: float | None = 30.0) -> bool:
        """Deliver the tracker's queue and re-read the job (not when the delivery failed)."""
        delivered = await self.tracker.flush(timeout)
        if delivered:
            await self.refresh()
        return delivered

    async def refresh(self) -> None:
        """Re-read the job from the API when that is possible (best effort)."""
        if self.state is None:
            return
        try:
            response = await self.tracker.request("GET", f"/jobs/{self.state.id}")
        except (ApiError, TrackerUnavailable) as error:
            logger.debug("cannot re-read job %s: %s", self.provider_job_id, error)
            return
        self.state = JobState.model_validate(response.json())

    async def __aenter__(self) -> AsyncJob:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is not None and not core.is_clean_exit(exc):
                message, metadata = core.exception_report(exc)
                if isinstance(exc, asyncio.CancelledError):
                    # A cancellation must not wait for the network (asyncio.timeout, a task
                    # group): the report is queued, whatever the mode, and not flushed.
                    event = core.make_event(
                        self.provider_job_id, "error", None, message, metadata, None, None
                    )
                    await self.tracker._sender().put(event)
                    return
                await self.error(message, metadata=metadata)
            if self.mode == "background":
                await self.flush(timeout=self.tracker.exit_timeout)
        except TrackerError as error:
            if exc is None:
                raise
            logger.warning("could not report %r for job %s: %s", exc, self.provider_job_id, error)


class AsyncConfigs:
    """Job configurations, pushed with an admin's key with the `configure` scope."""

    def __init__(self, tracker: AsyncTracker) -> None:
        self._tracker = tracker

    async def push(self, source: ConfigSource) -> list[PushOutcome]:
        """As Configs.push, awaited (a file is read and validated before anything is sent)."""
        body = core.config_file(source).body()
        response = await self._tracker.request("PUT", "/job-configurations", json=body)
        return [PushOutcome.model_validate(item) for item in response.json()]
