"""HTTP with timeouts and retries: connection errors, timeouts, 429, 502, 503 and 504 are retried
with exponential backoff and jitter, waiting what `Retry-After` says when the API says it; any
other refusal is final. Every request the client makes is idempotent (events carry their
`event_id`, a job its `provider_job_id`, a configuration upload compares content), so resending
one whose answer was lost never counts anything twice."""

from __future__ import annotations

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


class Transport:
    """One connection pool to the API (thread-safe), and the retry loop around every request."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        timeout: float,
        retry: RetryPolicy,
        user_agent: str,
    ) -> None:
        headers = {"User-Agent": user_agent, "Accept": "application/json"}
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retry = retry
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        # Set when the client is closing: waits between retries end at once.
        self.cancelled = threading.Event()

    def _credentials(self, headers: dict[str, str] | None) -> dict[str, str]:
        # A request that brings its own token sends no key: the API refuses a key on the
        # routes that take a token (configurations, accounts) rather than ignore it.
        if not self._api_key or (headers and "Authorization" in headers):
            return {}
        return {"X-API-Key": self._api_key}

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
        policy = retry or self.retry
        headers = {**self._credentials(headers), **(headers or {})}
        give_up_at = time.monotonic() + policy.deadline
        reason = "no attempt made"
        for attempt in range(1, policy.attempts + 1):
            if self.cancelled.is_set():
                break
            remaining = give_up_at - time.monotonic()
            retry_after: float | None = None
            try:
                response = self._client.request(
                    method,
                    path,
                    json=json,
                    content=content,
                    data=data,
                    headers=headers,
                    timeout=max(0.1, min(self.timeout, remaining)),
                )
            except RETRY_ERRORS as error:
                reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            else:
                if response.status_code < 400:
                    return response
                detail = _detail(response)
                if response.status_code not in RETRY_STATUSES:
                    raise ApiError(response.status_code, detail, method=method, path=path)
                reason = f"{response.status_code} {detail}"
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if attempt == policy.attempts:
                break
            delay = retry_after if retry_after is not None else policy.delay(attempt)
            if time.monotonic() + delay > give_up_at:
                reason += (
                    f" (a retry in {delay:.1f} s would pass the {policy.deadline:g} s deadline)"
                )
                raise TrackerUnavailable(f"{method} {path}: {reason}", retry_after=retry_after)
            logger.info(
                "%s %s failed (%s); retry %d in %.2f s",
                method,
                path,
                reason,
                attempt,
                delay,
                extra={"trackerapi_delay": delay, "trackerapi_retry_after": retry_after},
            )
            if self.cancelled.wait(delay):
                break
        raise TrackerUnavailable(f"{method} {path}: {reason}")

    def close(self) -> None:
        self._client.close()


def _detail(response: httpx.Response) -> str:
    try:
        return ApiError.describe(response.json())
    except ValueError:
        return response.text[:500] or response.reason_phrase
