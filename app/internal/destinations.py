"""Where webhooks may be sent: an absolute https URL (http when allowed) on an allowed port,
whose host resolves only to public addresses (private, loopback and link-local ones when
allowed).

The URL is checked when an endpoint is registered; before each delivery its host is resolved
once more, every address it resolves to is checked, and the delivery connects to the checked
addresses (`pin`): a name that answers a public address to the check and a private one next is
never followed there. An IPv6 address that carries an IPv4 address (IPv4-mapped, NAT64, 6to4)
is judged by the IPv4 address it carries."""

import ipaddress
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

from app.internal.errors import InvalidInput

# Answers the addresses a host name resolves to (IPv4 or IPv6, as text).
Resolver = Callable[[str, int], list[str]]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"https": 443, "http": 80}
# NAT64 prefixes: the well-known one carries the IPv4 address in its last 32 bits (RFC 6052);
# the local-use one (RFC 8215) is a network's own, so what it reaches is private by definition.
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
# Never public: the local-use NAT64 prefix (RFC 8215) is a network's own; so are an IPv4 address
# written IPv4-compatible (::/96, deprecated by RFC 4291) or SIIT's IPv4-translated
# (::ffff:0:0:0/96, RFC 2765), which Python's ipaddress calls global whatever they carry.
NEVER_PUBLIC = (
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
)


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # A scoped IPv6 address (fe80::1%eth0) is judged by its address.
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))


@dataclass(frozen=True)
class Target:
    """Where a URL sends to: its host as sent on the wire (IDNA-encoded), and its port."""

    scheme: str
    host: str
    port: int


def check_url(url: str, *, allow_http: bool, allowed_ports: Collection[int] | None) -> Target:
    """Refuse what is not an absolute https (or, when allowed, http) URL with a host and an
    allowed port (None: any port); answer where it sends to."""
    try:
        parts = urlsplit(url)
        port = parts.port
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
    # What the sender refuses must be refused here, not met at delivery time.
    unprintable = next((char for char in url if char <= " " or char == "\x7f"), None)
    if unprintable is not None:
        raise InvalidInput(f"url must not contain spaces or control characters ({unprintable!r})")
    host = parts.hostname
    try:
        if not host.isascii():
            host = idna.encode(host).decode("ascii")
    except idna.IDNAError as error:
        raise InvalidInput(f"url's host is not a valid international name: {error}") from error
    port = port or DEFAULT_PORTS[parts.scheme]
    if allowed_ports is not None and port not in allowed_ports:
        ports = ", ".join(str(allowed) for allowed in sorted(allowed_ports))
        raise InvalidInput(
            f"url's port {port} is not allowed: webhooks are sent to port {ports} only "
            "(the WEBHOOK_ALLOWED_PORTS setting)"
        )
    return Target(scheme=parts.scheme, host=host, port=port)


def carried_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped, NAT64 or 6to4."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return address.sixtofour


def not_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in network for network in NEVER_PUBLIC):
            return True
        carried = carried_ipv4(address)
        if carried is not None:
            return not_public(carried)
    return not address.is_global or address.is_multicast


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class Refused(Exception):
    """No place to send to; the message says why."""


def pin(target: Target, *, allow_private: bool, resolve: Resolver) -> list[str]:
    """Resolve the target's host once and answer the addresses to connect to, in the order
    resolved, once every one is found public (any address, when private ones are allowed)."""
    literal = _literal(target.host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            answers = resolve(target.host, target.port)
            addresses = [ipaddress.ip_address(answer) for answer in answers]
        except (OSError, UnicodeError, ValueError):
            raise Refused(f"the host {target.host!r} does not resolve") from None
        if not addresses:
            raise Refused(f"the host {target.host!r} does not resolve")
    if not allow_private:
        for address in addresses:
            if not_public(address):
                raise Refused(
                    f"the host {target.host!r} resolves to {address}, which is not a public address"
                )
    return [str(address) for address in addresses]


def check_destination(
    url: str,
    *,
    allow_http: bool,
    allow_private: bool,
    allowed_ports: Collection[int] | None,
    resolve: Resolver = system_resolver,
) -> None:
    """What registration checks: the URL, and (unless private addresses are allowed) that its
    host resolves to public addresses only."""
    target = check_url(url, allow_http=allow_http, allowed_ports=allowed_ports)
    if not allow_private:
        try:
            pin(target, allow_private=False, resolve=resolve)
        except Refused as refused:
            raise InvalidInput(f"url is refused: {refused}") from None
