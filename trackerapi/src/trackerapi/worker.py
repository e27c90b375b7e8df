"""The background sender: events queued by the callers, sent in batches (`POST /events/batch`)
by one daemon thread (`Worker`) or one asyncio task (`AsyncWorker`).

The caller pays for building the event and one `deque.append`; the sender is woken only when it
is idle, when a batch is full or when a flush asks, never once per event (a wake-up per event
costs the caller a lock and the sender a thread switch, and made the caller's cost unsteady).
Once awake, the sender waits `linger` seconds for more events to join the batch unless it is
full already. A flush is a marker in the same queue: when the sender reaches it, everything
queued before it has been delivered or spooled. `Batches` holds these rules for both senders.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque

from trackerapi.courier import AsyncCourier, Courier
from trackerapi.errors import CLOSED, TrackerError
from trackerapi.models import Event
from trackerapi.spool import EntryKind

logger = logging.getLogger("trackerapi")


class Marker:
    """A flush in the queue: `delivered` is set when the sender reaches it."""

    delivered = False
    stop = False


class Batches:
    """The queue between the callers and the sender, and how it is cut into batches."""

    def __init__(self, *, max_queue: int, max_batch: int, linger: float) -> None:
        self.items: deque[Event | Marker] = deque()
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.linger = linger
        # Read by callers without a lock (one attribute read): the sender is waiting for work.
        self.idle = True
        self._markers = 0
        self._markers_lock = threading.Lock()

    def add(self, event: Event) -> bool:
        """Queue an event; True when the sender must be woken for it."""
        items = self.items
        items.append(event)
        return self.idle or len(items) >= self.max_batch

    def full(self) -> bool:
        return len(self.items) >= self.max_queue

    def add_marker(self, marker: Marker) -> None:
        with self._markers_lock:
            self._markers += 1
        self.items.append(marker)

    def worth_lingering(self) -> bool:
        """Whether to wait for more events: no flush asked, and room left in the batch."""
        return not self._markers and len(self.items) < self.max_batch

    def take(self) -> tuple[list[Event], list[Marker]]:
        """The events at the head, up to a batch, and the flush marker that ends them, if any."""
        events: list[Event] = []
        markers: list[Marker] = []
        items = self.items
        while items and len(events) < self.max_batch:
            item = items.popleft()
            if isinstance(item, Marker):
                with self._markers_lock:
                    self._markers -= 1
                markers.append(item)
                break
            events.append(item)
        return events, markers

    def put_back(self, events: list[Event]) -> None:
        """Events taken but not sent (the sender was cancelled): first in line again."""
        self.items.extendleft(reversed(events))

    def take_all(self) -> tuple[list[Event], list[Marker]]:
        events: list[Event] = []
        markers: list[Marker] = []
        while True:
            some, found = self.take()
            if not some and not found:
                return events, markers
            events += some
            markers += found


def entries(events: list[Event]) -> list[tuple[EntryKind, str]]:
    return [("event", event.content) for event in events]


class _ThreadMarker(Marker):
    def __init__(self, *, stop: bool = False) -> None:
        self.done = threading.Event()
        self.stop = stop


class Worker:
    def __init__(self, courier: Courier, batches: Batches) -> None:
        self.courier = courier
        self.batches = batches
        self._wake = threading.Event()
        self._room = threading.Condition()
        # Set by stop() before its flush: from then on `put` refuses events.
        self._closed = False
        self._stopping = False
        # Events whose sending failed unexpectedly, sent again with the next batch.
        self._held: list[Event] = []
        self.thread = threading.Thread(target=self._run, name="trackerapi-sender", daemon=True)
        self.thread.start()

    def put(self, event: Event) -> None:
        """Queue the event, or raise TrackerError when the worker is stopping. Without a lock:
        an event added before stop() marks the worker closed is queued before stop's flush;
        one added after it is taken back and refused, unless stop() took it first (it is then
        spooled, and the caller told it was queued)."""
        batches = self.batches
        if batches.full():
            # A full queue makes the caller wait for room: slower, but nothing is dropped.
            with self._room:
                while batches.full() and not self._closed and self.thread.is_alive():
                    self._wake.set()
                    self._room.wait(0.1)
        wake = batches.add(event)
        if self._closed:
            try:
                batches.items.remove(event)
            except ValueError:
                return
            raise TrackerError(CLOSED)
        if wake and not self._wake.is_set():
            self._wake.set()

    def flush(self, timeout: float | None) -> bool:
        """True when everything queued before the call was delivered within `timeout`."""
        marker = _ThreadMarker()
        self.batches.add_marker(marker)
        self._wake.set()
        return marker.done.wait(timeout) and marker.delivered

    def stop(self, timeout: float) -> bool:
        """Flush within `timeout`, then end the thread; within `timeout` in all. Whatever could
        not be sent by then is spooled (retries are cut short), so nothing queued is lost."""
        give_up_at = time.monotonic() + timeout
        self._closed = True
        with self._room:
            self._room.notify_all()
        marker = _ThreadMarker(stop=True)
        self.batches.add_marker(marker)
        self._wake.set()
        if marker.done.wait(timeout) and not self._held:
            delivered = marker.delivered
        else:
            self._stopping = True
            self.courier.transport.cancelled.set()
            self._wake.set()
            # The request in flight (if any) ends within its HTTP timeout; its batch is spooled.
            self.thread.join(max(0.0, give_up_at - time.monotonic()))
            delivered = False
        # Events added while the worker was being closed, which their callers did not take back.
        self._spool_the_rest()
        return delivered

    def _spool_the_rest(self) -> None:
        left, self._held = self._held, []
        events, markers = self.batches.take_all()
        left += events
        for marker in markers:
            assert isinstance(marker, _ThreadMarker)
            marker.done.set()
        if left:
            self.courier.keep(entries(left))

    def _run(self) -> None:
        batches = self.batches
        while not self._stopping:
            batches.idle = True
            if not batches.items:
                self._wake.wait()
            batches.idle = False
            self._wake.clear()
            if batches.worth_lingering():
                self._wake.wait(batches.linger)
                self._wake.clear()
            events, markers = batches.take()
            if self._room_wanted():
                with self._room:
                    self._room.notify_all()
            batch = self._held + events
            try:
                delivered = self._send(batch, flushing=bool(markers))
            except Exception:
                if self._stopping:  # closed under it: the batch was spooled before it was sent
                    return
                # The thread must outlive anything (a full disk, a locked spool, a bug): a dead
                # sender would block every caller. What the spool does not hold yet of the batch
                # (it is emptied once spooled) is held and sent with the next one.
                logger.exception("the trackerapi sender failed; %d events are held", len(batch))
                self._held = batch
                delivered = False
            else:
                self._held = []
            for marker in markers:
                assert isinstance(marker, _ThreadMarker)
                marker.delivered = delivered
                marker.done.set()
            if any(marker.stop for marker in markers):
                return

    def _room_wanted(self) -> bool:
        return self.batches.max_queue - len(self.batches.items) <= self.batches.max_batch

    def _send(self, batch: list[Event], *, flushing: bool) -> bool:
        if not batch:
            return self.courier.drain() if flushing else True
        # During an outage only a flush tries the API; other batches just wait in the spool.
        courier = self.courier
        return courier.deliver(
            entries(batch), try_now=flushing or not courier.in_outage, kept=batch.clear
        )


class _TaskMarker(Marker):
    def __init__(self, *, stop: bool = False) -> None:
        self.done = asyncio.get_running_loop().create_future()
        self.stop = stop

    def settle(self, delivered: bool) -> None:
        if not self.done.done():
            self.delivered = delivered
            self.done.set_result(delivered)


class AsyncWorker:
    """The sender as a task of the event loop that started it; the same batches and delivery.
    Callers never await the network: `put` appends and, when the sender must be woken, sets an
    asyncio.Event; only a full queue makes them await (room)."""

    def __init__(self, courier: AsyncCourier, batches: Batches) -> None:
        self.courier = courier
        self.batches = batches
        self.loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        # Set by stop(): from then on `put` refuses events, those waiting for room included.
        self._closed = False
        batches.idle = True
        self.task = self.loop.create_task(self._run(), name="trackerapi-sender")

    async def put(self, event: Event) -> None:
        batches = self.batches
        while batches.full() and not self._closed:
            self._wake.set()
            self._room.clear()
            await self._room.wait()
        if self._closed:
            raise TrackerError(CLOSED)
        if batches.add(event) and not self._wake.is_set():
            self._wake.set()

    async def flush(self, timeout: float | None, *, stop: bool = False) -> bool:
        marker = _TaskMarker(stop=stop)
        self.batches.add_marker(marker)
        self._wake.set()
        await asyncio.wait([marker.done], timeout=timeout)
        return marker.done.done() and marker.done.result()

    async def stop(self, timeout: float) -> bool:
        """As Worker.stop: flush within `timeout`, end the task, spool what is left."""
        self._closed = True
        self._room.set()
        delivered = await self.flush(timeout, stop=True)
        if not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        events, markers = self.batches.take_all()
        for marker in markers:
            assert isinstance(marker, _TaskMarker)
            marker.settle(False)
        if events:
            await self.courier.keep(entries(events))
        return delivered

    async def _run(self) -> None:
        batches = self.batches
        events: list[Event] = []
        held: list[Event] = []
        markers: list[Marker] = []
        try:
            while True:
                batches.idle = True
                if not batches.items:
                    await self._wake.wait()
                batches.idle = False
                self._wake.clear()
                if batches.worth_lingering():
                    await self._linger()
                    self._wake.clear()
                taken, markers = batches.take()
                events, held = held + taken, []
                self._room.set()
                try:
                    delivered = await self._send(events, flushing=bool(markers))
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # As the thread does: held, and sent with the next batch (not put back in
                    # the queue, which the sender would take again at once, for ever).
                    logger.exception(
                        "the trackerapi sender failed; %d events are held", len(events)
                    )
                    held, delivered = events, False
                events = []
                for marker in markers:
                    assert isinstance(marker, _TaskMarker)
                    marker.settle(delivered)
                if any(marker.stop for marker in markers):
                    return
        except asyncio.CancelledError:
            # The loop is ending (asyncio.run returned) or the tracker closing: what was taken
            # but not spooled goes back in line, for the exit hook (or the next loop) to send;
            # a flush that waited for it is answered (not delivered).
            batches.put_back(held + events)
            batches.idle = True
            for marker in markers:
                assert isinstance(marker, _TaskMarker)
                marker.settle(False)
            raise

    async def _linger(self) -> None:
        """Wait `linger` seconds for a wake-up. With asyncio.wait: before Python 3.12,
        asyncio.wait_for could swallow a cancellation that came with the wake-up (stop() wakes
        the sender, then cancels it), and the sender went on to send a batch."""
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait([waiter], timeout=self.batches.linger)
        finally:
            waiter.cancel()

    async def _send(self, taken: list[Event], *, flushing: bool) -> bool:
        """Deliver what was taken; `taken` is emptied once it is in the spool, so that a
        cancellation from then on puts nothing back (it would be spooled twice)."""
        if not taken:
            return await self.courier.drain() if flushing else True
        courier = self.courier
        return await courier.deliver(
            entries(taken), try_now=flushing or not courier.in_outage, kept=taken.clear
        )
