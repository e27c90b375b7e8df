"""One HTTP POST to a URL over a connection to an address chosen beforehand, within one
deadline for the whole exchange.

The URL keeps its host name: the `Host` header and the TLS server name are the receiver's
name, and the certificate is verified against that name, while the TCP connection goes to the
addresses given (those the caller checked, each in turn until one connects), never to a second
resolution of the name. Every connect, read and write is bounded by what is left of the
deadline, so a receiver that drips its answer a byte at a time is cut off when the deadline
passes. Redirects are never followed (httpcore follows none), and the answer's body is never
read: its status is the answer.
"""

import ssl
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import httpcore

from app.internal.destinations import DEFAULT_PORTS, Target

# The system's sockets: the backend below only chooses the address they connect to.
_SYSTEM = httpcore.SyncBackend()


class DeadlinePassed(httpcore.TimeoutException):
    pass


def _left(deadline: float, timeout: float | None) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlinePassed("the whole exchange took longer than its deadline")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(self._deadline, timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(self._deadline, timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._stream.start_tls(
            ssl_context, server_hostname, _left(self._deadline, timeout)
        )
        return _DeadlineStream(stream, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects to the first of `addresses` that accepts, whatever host the request names."""

    def __init__(self, addresses: Sequence[str], deadline: float) -> None:
        self._addresses = addresses
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in self._addresses:
            try:
                stream = _SYSTEM.connect_tcp(
                    address,
                    port,
                    timeout=_left(self._deadline, timeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
                continue
            return _DeadlineStream(stream, self._deadline)
        assert failure is not None  # pin answers at least one address
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("webhooks are not sent over Unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def default_ssl_context() -> ssl.SSLContext:
    import certifi  # the CA bundle httpx would use, here as well

    return ssl.create_default_context(cafile=certifi.where())


def request_target(url: str) -> bytes:
    """The path and query of `url` as sent on the request line (non-ASCII percent-encoded)."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return quote(target, safe="!$&'()*+,/:;=?@~%").encode("ascii")


def host_header(target: Target) -> str:
    """The `Host` header: an IPv6 address in brackets, the port unless it is the scheme's own
    (httpcore would write an IPv6 host bare, which reads as a host and a port)."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    return host if target.port == DEFAULT_PORTS[target.scheme] else f"{host}:{target.port}"


def post(
    target: Target,
    url: str,
    *,
    addresses: Sequence[str],
    body: bytes,
    headers: dict[str, str],
    deadline_seconds: float,
    ssl_context: ssl.SSLContext,
) -> int:
    """POST `body` to `url` (whose host and port `target` holds) over a connection to the
    first of `addresses` that accepts one; answer the status code. Raises an httpcore error
    (a timeout once the deadline passed) when there is no answer."""
    deadline = time.monotonic() + deadline_seconds
    with httpcore.ConnectionPool(
        ssl_context=ssl_context,
        network_backend=_PinnedBackend(addresses, deadline),
        max_connections=1,
        retries=0,
    ) as pool:
        timeouts = dict.fromkeys(("connect", "read", "write", "pool"), deadline_seconds)
        with pool.stream(
            "POST",
            httpcore.URL(
                scheme=target.scheme.encode(),
                host=target.host.encode(),
                port=target.port,
                target=request_target(url),
            ),
            headers=[("Host", host_header(target)), *headers.items()],
            content=body,
            extensions={"timeout": timeouts},
        ) as response:
            return response.status
