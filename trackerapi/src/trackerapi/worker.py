"""The background sender: a bounded queue drained by one daemon thread into `POST /events/batch`.

The caller pays for building the event and one `queue.put`. The thread waits `linger` seconds
after the first event of a batch for more to join it, so a burst leaves in few requests. A
flush is a marker in the same queue: when the thread reaches it, everything queued before it
has been delivered or spooled.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from trackerapi.courier import Courier
from trackerapi.models import Event
from trackerapi.spool import EntryKind

logger = logging.getLogger("trackerapi")


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.delivered = False


class _Stop(_Flush):
    pass


class Worker:
    def __init__(self, courier: Courier, *, max_queue: int, max_batch: int, linger: float) -> None:
        self.courier = courier
        self.max_batch = max_batch
        self.linger = linger
        self.queue: queue.Queue[Event | _Flush] = queue.Queue(max_queue)
        # Events whose sending failed unexpectedly, sent again with the next batch.
        self._held: list[Event] = []
        self.thread = threading.Thread(target=self._run, name="trackerapi-sender", daemon=True)
        self.thread.start()

    def put(self, event: Event) -> None:
        # A full queue makes the caller wait for room: slower, but nothing is dropped.
        self.queue.put(event)

    def flush(self, timeout: float | None) -> bool:
        """True when everything queued before the call was delivered within `timeout`."""
        return self._wait(_Flush(), timeout)

    def stop(self, timeout: float) -> bool:
        """Flush within `timeout`, then end the thread. Whatever could not be sent by then is
        spooled (retries are cut short), so nothing queued is lost."""
        started = time.monotonic()
        delivered = self._wait(_Stop(), timeout)
        if not self.thread.is_alive() and not self._held:
            return delivered
        self.courier.transport.cancelled.set()
        # The request in flight (if any) ends within the HTTP timeout; its batch is in the spool.
        self.thread.join(max(0.0, timeout - (time.monotonic() - started)) + 1.0)
        self._spool_the_rest()
        return False

    def _wait(self, marker: _Flush, timeout: float | None) -> bool:
        try:
            self.queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout) and marker.delivered

    def _spool_the_rest(self) -> None:
        left, self._held = self._held, []
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Event):
                left.append(item)
            else:
                item.done.set()
        if left:
            self.courier.keep([("event", event.content) for event in left])

    def _run(self) -> None:
        while True:
            batch: list[Event] = []
            markers: list[_Flush] = []
            item = self.queue.get()
            send_by = time.monotonic() + self.linger
            while True:
                if isinstance(item, _Flush):
                    markers.append(item)
                    break
                batch.append(item)
                if len(batch) >= self.max_batch:
                    break
                try:
                    item = self.queue.get(timeout=max(0.0, send_by - time.monotonic()))
                except queue.Empty:
                    break
            batch = self._held + batch
            try:
                delivered = self._send(batch, flushing=bool(markers))
            except Exception:
                # The thread must outlive anything (a full disk, a locked spool, a bug): a dead
                # sender would block every caller. The batch is held and sent with the next one.
                logger.exception("the trackerapi sender failed; %d events are held", len(batch))
                self._held = batch
                delivered = False
            else:
                self._held = []
            for marker in markers:
                marker.delivered = delivered
                marker.done.set()
            if any(isinstance(marker, _Stop) for marker in markers):
                return

    def _send(self, batch: list[Event], *, flushing: bool) -> bool:
        entries: list[tuple[EntryKind, str]] = [("event", event.content) for event in batch]
        if not entries:
            return self.courier.drain()
        # During an outage only a flush tries the API; other batches just wait in the spool.
        return self.courier.deliver(entries, try_now=flushing or not self.courier.in_outage)
