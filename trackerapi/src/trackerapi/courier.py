"""Delivery in order: what the spool holds goes first, then what is new; what the API refuses
for good (its content: 400, 404, 409, 413, 422, or an item `rejected` in a batch) is reported
item by item, never retried; what cannot reach it, or meets a 5xx, 401 or 403, waits in the
spool.

`Rules` holds every decision (what a group is, what its request is, what an answer means, when
the API counts as down); `Courier` and `AsyncCourier` only carry them out, one blocking, one
awaiting (with the SQLite spool's calls in a worker thread, off the event loop).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from trackerapi.errors import ApiError, TrackerUnavailable
from trackerapi.models import Rejection
from trackerapi.spool import Entry, EntryKind, Spool
from trackerapi.transport import AsyncTransport, RetryPolicy, Transport

logger = logging.getLogger("trackerapi")

# Once the API proved unreachable, batches go straight to the spool, and flushes try it once
# rather than through the whole retry budget, for this long.
OUTAGE_SECONDS = 30.0
SINGLE_TRY = RetryPolicy(attempts=1)
JSON_HEADERS = {"Content-Type": "application/json"}

ErrorCallback = Callable[[Rejection], None]
Entries = Sequence[tuple[EntryKind, str]]


class Rules:
    """The delivery rules and state both couriers share."""

    def __init__(
        self,
        spool: Spool | None,
        *,
        base_url: str,
        on_error: ErrorCallback | None,
        max_batch: int,
        max_batch_bytes: int,
        key: str,
    ) -> None:
        self.base_url = base_url
        # Entries are spooled under the key's id: only a client with the same key sends them.
        self.key = key
        self.spool = spool
        self.on_error = on_error
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self._down_until = 0.0
        # Whether anything is known to wait in the spool (checked in the file once, at first use).
        self._spooled: bool | None = None

    @property
    def in_outage(self) -> bool:
        return time.monotonic() < self._down_until

    def retry_policy(self) -> RetryPolicy | None:
        """One try during an outage; the configured policy otherwise."""
        return SINGLE_TRY if self.in_outage else None

    def mark_down(self, error: TrackerUnavailable) -> None:
        """An outage of OUTAGE_SECONDS, or as long as the API's Retry-After asked, if longer."""
        self._down_until = time.monotonic() + max(OUTAGE_SECONDS, error.retry_after or 0.0)
        logger.warning("the tracker API is unavailable: %s", error)

    def mark_up(self) -> None:
        self._down_until = 0.0

    @staticmethod
    def unavailable(error: ApiError, *, batch: bool = False) -> TrackerUnavailable | None:
        """The refusal as an outage when it says nothing about the content (5xx, 401, 403):
        what was sent is kept, not dropped. None for a refusal of the content itself.

        A batch is never refused whole with 404 (its items are, one by one): a 404 to one means
        the URL reaches no Tracker API, and the batch is kept for when it does."""
        if batch and error.status_code == 404:
            return TrackerUnavailable(f"no Tracker API at this URL (check the base URL): {error}")
        if error.refuses_content:
            return None
        if error.status_code in (401, 403):
            return TrackerUnavailable(f"the API refused the key: {error}")
        return TrackerUnavailable(f"the API failed: {error}")

    def next_group(self, entries: list[Entry]) -> list[Entry]:
        """The leading job creation alone, or the leading events that fit in one batch."""
        if not entries or entries[0].kind == "job":
            return entries[:1]
        group: list[Entry] = []
        size = 0
        for entry in entries:
            size += len(entry.body) + 1
            if entry.kind != "event" or (group and size > self.max_batch_bytes):
                break
            group.append(entry)
        return group

    def groups(self, entries: Entries) -> list[list[Entry]]:
        """Entries cut into requests as the spool's are (for delivery without a spool)."""
        rest = [Entry(0, kind, body) for kind, body in entries]
        cut: list[list[Entry]] = []
        while rest:
            group = self.next_group(rest[: self.max_batch])
            cut.append(group)
            rest = rest[len(group) :]
        return cut

    @staticmethod
    def request_for(group: Sequence[Entry]) -> tuple[str, bytes]:
        """One job creation, or the events as one batch."""
        if group[0].kind == "job":
            return "/jobs", group[0].body.encode()
        return "/events/batch", ('{"events":[' + ",".join(e.body for e in group) + "]}").encode()

    def refused(self, group: Sequence[Entry], path: str, error: ApiError) -> None:
        """A refusal of the group: reported item by item when it refuses the content, raised as
        TrackerUnavailable (the group waits) when it says nothing about it."""
        outage = self.unavailable(error, batch=path == "/events/batch")
        if outage is not None:
            raise outage from error
        for entry in group:
            self.report(entry.kind, entry.data(), error.detail)

    def answered(self, group: Sequence[Entry], response: httpx.Response) -> None:
        """A batch's items the API rejected, reported one by one."""
        if group[0].kind == "job":
            return
        for result in response.json()["results"]:
            if result["result"] == "rejected":
                self.report("event", group[result["index"]].data(), result["reason"])

    def lost(self, entries: Entries) -> None:
        for kind, body in entries:
            self.report(kind, json.loads(body), "the API is unreachable and no spool is set")

    def lost_from(self, groups: list[list[Entry]]) -> None:
        self.lost([(entry.kind, entry.body) for group in groups for entry in group])

    def report(self, kind: EntryKind, body: dict[str, Any], reason: str) -> None:
        what = f"event {body.get('event_id')} of job {body.get('provider_job_id')}"
        logger.warning("%s rejected: %s", what if kind == "event" else f"job {body}", reason)
        if self.on_error is not None:
            try:
                self.on_error(Rejection(kind, body, reason))
            except Exception:
                logger.exception("the on_error callback raised")

    def still_waiting(self, count: int) -> None:
        assert self.spool is not None
        logger.warning("%d entries wait in the spool %s", count, self.spool.path)


class Courier(Rules):
    """Sends events and job creations through one Transport, with one Spool (or none)."""

    def __init__(self, transport: Transport, spool: Spool | None, **options: Any) -> None:
        super().__init__(spool, base_url=transport.base_url, **options)
        self.transport = transport
        self._drain_lock = threading.Lock()

    def pending(self) -> bool:
        """Whether the spool holds anything for this API."""
        if self.spool is None:
            return False
        if self._spooled is None:
            self._spooled = self.spool.count(self.base_url, self.key) > 0
        return self._spooled

    def keep(self, entries: Entries) -> bool:
        """Put entries in the spool to be sent later; False when there is no spool (lost)."""
        if self.spool is None:
            self.lost(entries)
            return False
        self.spool.append(self.base_url, self.key, entries)
        self._spooled = True
        return True

    def deliver(
        self, entries: Entries, *, try_now: bool = True, kept: Callable[[], None] | None = None
    ) -> bool:
        """Send entries after whatever the spool already holds; True when nothing is left
        waiting. Through the spool, so a batch in flight survives the process dying; `kept` is
        called once the entries are in it."""
        if self.spool is None:
            groups = self.groups(entries)
            for sent, group in enumerate(groups):
                try:
                    self._send(group, self.retry_policy())
                except TrackerUnavailable as error:
                    self.mark_down(error)
                    self.lost_from(groups[sent:])
                    return False
            return True
        self.keep(entries)
        if kept is not None:
            kept()
        return self.drain() if try_now else False

    def drain(self) -> bool:
        """Send the spool's entries in order until none is left (True) or the API cannot be
        reached (False: they stay)."""
        if self.spool is None:
            return True
        with self._drain_lock:
            while True:
                group = self.next_group(self.spool.head(self.base_url, self.key, self.max_batch))
                if not group:
                    self._spooled = False
                    return True
                try:
                    self._send(group, self.retry_policy())
                except TrackerUnavailable as error:
                    self.mark_down(error)
                    self.still_waiting(self.spool.count(self.base_url, self.key))
                    return False
                self.mark_up()
                self.spool.delete(group)

    def _send(self, group: Sequence[Entry], retry: RetryPolicy | None) -> None:
        path, content = self.request_for(group)
        try:
            response = self.transport.request(
                "POST", path, content=content, headers=JSON_HEADERS, retry=retry
            )
        except ApiError as error:
            self.refused(group, path, error)
            return
        self.answered(group, response)


class AsyncCourier(Rules):
    """The same delivery, awaited: HTTP through an AsyncTransport, the spool's SQLite calls in
    a worker thread (asyncio.to_thread) so that the event loop never waits on the disk."""

    def __init__(self, transport: AsyncTransport, spool: Spool | None, **options: Any) -> None:
        super().__init__(spool, base_url=transport.base_url, **options)
        self.transport = transport
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    def _drain_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            self._locks = {loop: (lock := asyncio.Lock())}  # older loops' locks are done with
        return lock

    async def pending(self) -> bool:
        if self.spool is None:
            return False
        if self._spooled is None:
            count = await asyncio.to_thread(self.spool.count, self.base_url, self.key)
            self._spooled = count > 0
        return self._spooled

    async def keep(self, entries: Entries, *, kept: Callable[[], None] | None = None) -> bool:
        """As Courier.keep; `kept` is called once the entries are in the spool, even when the
        caller is cancelled meanwhile: a thread cannot be stopped, so the append is waited for
        to its end (a plain future, which the end of asyncio.run does not cancel), and only then
        does the cancellation go on, with the caller knowing the entries are kept."""
        if self.spool is None:
            self.lost(entries)
            return False
        append = asyncio.get_running_loop().run_in_executor(
            None, self.spool.append, self.base_url, self.key, entries
        )
        try:
            await asyncio.shield(append)
        except asyncio.CancelledError:
            await asyncio.wait([append])
            if append.exception() is None:
                self._kept(kept)
            raise
        self._kept(kept)
        return True

    def _kept(self, kept: Callable[[], None] | None) -> None:
        self._spooled = True
        if kept is not None:
            kept()

    async def deliver(
        self, entries: Entries, *, try_now: bool = True, kept: Callable[[], None] | None = None
    ) -> bool:
        """As Courier.deliver; `kept` is called once the entries are safe in the spool."""
        if self.spool is None:
            groups = self.groups(entries)
            for sent, group in enumerate(groups):
                try:
                    await self._send(group, self.retry_policy())
                except TrackerUnavailable as error:
                    self.mark_down(error)
                    self.lost_from(groups[sent:])
                    return False
            return True
        await self.keep(entries, kept=kept)
        return await self.drain() if try_now else False

    async def drain(self) -> bool:
        spool = self.spool
        if spool is None:
            return True
        async with self._drain_lock():
            while True:
                head = await asyncio.to_thread(spool.head, self.base_url, self.key, self.max_batch)
                group = self.next_group(head)
                if not group:
                    self._spooled = False
                    return True
                try:
                    await self._send(group, self.retry_policy())
                except TrackerUnavailable as error:
                    self.mark_down(error)
                    count = await asyncio.to_thread(spool.count, self.base_url, self.key)
                    self.still_waiting(count)
                    return False
                self.mark_up()
                await asyncio.to_thread(spool.delete, group)

    async def _send(self, group: Sequence[Entry], retry: RetryPolicy | None) -> None:
        path, content = self.request_for(group)
        try:
            response = await self.transport.request(
                "POST", path, content=content, headers=JSON_HEADERS, retry=retry
            )
        except ApiError as error:
            self.refused(group, path, error)
            return
        self.answered(group, response)
