"""HTTP with timeouts and retries: connection errors, timeouts, 429, 502, 503 and 504 are retried
with exponential backoff and jitter, waiting what `Retry-After` says when the API says it; any
other refusal is final. Every request the client makes is idempotent (events carry their
`event_id`, a job its `provider_job_id`, a configuration upload compares content), so resending
one whose answer was lost never counts anything twice."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from trackerapi.errors import ApiError, TrackerUnavailable

logger = logging.getLogger("trackerapi")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Failures after which the request may or may not have reached the API: safe to resend, since
# every request is idempotent.
RETRY_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one request tries: at most `attempts` tries within `deadline` seconds, waiting
    `backoff` * 2**n seconds (capped at `max_backoff`, with jitter) between them."""

    attempts: int = 6
    backoff: float = 0.25
    max_backoff: float = 8.0
    deadline: float = 30.0

    def delay(self, retry: int) -> float:
        """The wait before retry number `retry` (1 for the first): half fixed, half random, so
        clients that failed together do not come back together."""
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** (retry - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait, from `Retry-After` as seconds or as an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Attempts:
    """The retry rule of one request, whichever transport makes it: after each try, either the
    answer, a final refusal (ApiError), the wait before the next try, or the end of the budget
    (TrackerUnavailable)."""

    def __init__(self, policy: RetryPolicy, method: str, path: str) -> None:
        self.policy = policy
        self.method = method
        self.path = path
        self.give_up_at = time.monotonic() + policy.deadline
        self.attempt = 0
        self.reason = "no attempt made"

    def timeout(self, configured: float) -> float:
        """The HTTP timeout of the next try: never past the policy's deadline."""
        self.attempt += 1
        return max(0.1, min(configured, self.give_up_at - time.monotonic()))

    def failed(self, error: Exception) -> float:
        """After a connection error or timeout: the wait before the next try."""
        self.reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        return self._next_wait(None)

    def answered(self, response: httpx.Response) -> float | None:
        """After an answer: None when it is the 2xx to return, else the wait before the next
        try; raises ApiError for a refusal that is not retried."""
        if response.status_code < 400:
            return None
        detail = _detail(response)
        if response.status_code not in RETRY_STATUSES:
            raise ApiError(response.status_code, detail, method=self.method, path=self.path)
        self.reason = f"{response.status_code} {detail}"
        return self._next_wait(parse_retry_after(response.headers.get("Retry-After")))

    def _next_wait(self, retry_after: float | None) -> float:
        if self.attempt >= self.policy.attempts:
            raise self.exhausted()
        delay = retry_after if retry_after is not None else self.policy.delay(self.attempt)
        if time.monotonic() + delay > self.give_up_at:
            self.reason += (
                f" (a retry in {delay:.1f} s would pass the {self.policy.deadline:g} s deadline)"
            )
            raise TrackerUnavailable(
                f"{self.method} {self.path}: {self.reason}", retry_after=retry_after
            )
        logger.info(
            "%s %s failed (%s); retry %d in %.2f s",
            self.method,
            self.path,
            self.reason,
            self.attempt,
            delay,
            extra={"trackerapi_delay": delay, "trackerapi_retry_after": retry_after},
        )
        return delay

    def exhausted(self) -> TrackerUnavailable:
        return TrackerUnavailable(f"{self.method} {self.path}: {self.reason}")


class _Http:
    """What both transports share: the base URL, the key and the default policy."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        timeout: float,
        retry: RetryPolicy,
        user_agent: str,
    ) -> None:
        self.headers = {"User-Agent": user_agent, "Accept": "application/json"}
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retry = retry

    def credentials(self, headers: dict[str, str] | None) -> dict[str, str]:
        # A request that brings its own token sends no key: the API refuses a key on the
        # routes that take a token (accounts) rather than ignore it.
        if not self._api_key or (headers and "Authorization" in headers):
            return headers or {}
        return {"X-API-Key": self._api_key, **(headers or {})}


class Transport(_Http):
    """One connection pool to the API (thread-safe), and the retry loop around every request."""

    def __init__(self, base_url: str, **options: Any) -> None:
        super().__init__(base_url, **options)
        self._client = httpx.Client(
            base_url=self.base_url, headers=self.headers, timeout=self.timeout
        )
        # Set when the client is closing: waits between retries end at once.
        self.cancelled = threading.Event()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        retry: RetryPolicy | None = None,
    ) -> httpx.Response:
        """The API's 2xx answer; raises ApiError for a refusal and TrackerUnavailable when the
        retries ran out (or would run past the policy's deadline)."""
        attempts = Attempts(retry or self.retry, method, path)
        headers = self.credentials(headers)
        while not self.cancelled.is_set():
            try:
                response = self._client.request(
                    method, path, json=json, content=content, data=data, headers=headers,
                    timeout=attempts.timeout(self.timeout),
                )  # fmt: skip
            except RETRY_ERRORS as error:
                delay = attempts.failed(error)
            else:
                wait = attempts.answered(response)
                if wait is None:
                    return response
                delay = wait
            if self.cancelled.wait(delay):
                break
        raise attempts.exhausted()

    def close(self) -> None:
        self._client.close()


class AsyncTransport(_Http):
    """The same for asyncio: one httpx.AsyncClient per event loop, the same retry rule."""

    def __init__(self, base_url: str, **options: Any) -> None:
        super().__init__(base_url, **options)
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _client_for_loop(self) -> httpx.AsyncClient:
        # A connection pool belongs to the loop that made it: a new loop (another asyncio.run)
        # gets a new one.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(
                base_url=self.base_url, headers=self.headers, timeout=self.timeout
            )
            self._loop = loop
        return self._client

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        retry: RetryPolicy | None = None,
    ) -> httpx.Response:
        """As Transport.request, awaiting instead of blocking."""
        client = self._client_for_loop()
        attempts = Attempts(retry or self.retry, method, path)
        headers = self.credentials(headers)
        while True:
            try:
                response = await client.request(
                    method, path, json=json, content=content, data=data, headers=headers,
                    timeout=attempts.timeout(self.timeout),
                )  # fmt: skip
            except RETRY_ERRORS as error:
                delay = attempts.failed(error)
            else:
                wait = attempts.answered(response)
                if wait is None:
                    return response
                delay = wait
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()


def _detail(response: httpx.Response) -> str:
    try:
        return ApiError.describe(response.json())
    except ValueError:
        return response.text[:500] or response.reason_phrase
