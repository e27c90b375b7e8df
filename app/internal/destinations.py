"""Where webhooks may be sent: an absolute https URL (http when allowed) whose host resolves only
to public addresses (private, loopback and link-local ones when allowed). Checked when an
endpoint is registered and again before each delivery, since DNS answers can change."""

import ipaddress
import socket
from urllib.parse import urlsplit

import idna

from app.internal.errors import InvalidInput


def check_url(url: str, *, allow_http: bool) -> None:
    """Refuse what is not an absolute https (or, when allowed, http) URL with a host."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises for a port that is not a number in range)
    except ValueError as error:
        raise InvalidInput(f"url is not a valid URL: {error}") from error
    schemes = {"https", "http"} if allow_http else {"https"}
    if parts.scheme not in schemes:
        allowed = " or ".join(sorted(schemes))
        raise InvalidInput(
            f"url must be an absolute {allowed} URL, such as https://example.com/hook"
        )
    if not parts.hostname:
        raise InvalidInput("url has no host")
    if parts.username or parts.password:
        raise InvalidInput("url must not carry credentials: authenticate by the signature")
    if parts.fragment:
        raise InvalidInput("url must not have a #fragment")
    # What the sender (httpx) refuses must be refused here, not met at delivery time.
    unprintable = next((char for char in url if char <= " " or char == "\x7f"), None)
    if unprintable is not None:
        raise InvalidInput(f"url must not contain spaces or control characters ({unprintable!r})")
    try:
        if not parts.hostname.isascii():
            idna.encode(parts.hostname)
    except idna.IDNAError as error:
        raise InvalidInput(f"url's host is not a valid international name: {error}") from error


def refused_address(url: str) -> str | None:
    """Why the URL's host is no place to send to (it resolves to an address that is not
    public, or not at all), or None when every address it resolves to is public."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return f"the host {host!r} does not resolve"
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if not address.is_global or address.is_multicast:
            return f"the host {host!r} resolves to {address}, which is not a public address"
    return None


def check_destination(url: str, *, allow_http: bool, allow_private: bool) -> None:
    check_url(url, allow_http=allow_http)
    if not allow_private:
        reason = refused_address(url)
        if reason is not None:
            raise InvalidInput(f"url is refused: {reason}")
