"""Where webhooks may go: IPv6 forms that carry a private IPv4 address are judged by it, every
address a name resolves to is checked, the address checked is the one answered, and only the
allowed ports pass."""

import ipaddress

import pytest

from app.internal.destinations import Refused, Target, check_destination, check_url, pin
from app.internal.errors import InvalidInput

TARGET = Target(scheme="https", host="hooks.example", port=443)


def answering(*addresses: str) -> "Answers":
    return Answers(list(addresses))


class Answers:
    """A resolver that answers the same addresses every time, and counts its calls."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.calls = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return self.addresses


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.7",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:169.254.169.254",
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b::c0a8:1",  # NAT64 of 192.168.0.1
        "64:ff9b:1::808:808",  # the local-use NAT64 prefix: a network's own
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a00:1::",  # 6to4 of 10.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "::127.0.0.1",  # IPv4-compatible (deprecated): never public, whatever it carries
        "::8.8.8.8",
        "::ffff:0:7f00:1",  # SIIT's IPv4-translated form of 127.0.0.1
        "::ffff:0:808:808",
        "224.0.0.1",
    ],
)
def test_an_address_that_is_or_carries_a_private_one_is_refused(address: str) -> None:
    with pytest.raises(Refused, match="not a public address"):
        pin(TARGET, allow_private=False, resolve=answering(address))
    # As a literal in the URL too.
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(InvalidInput, match="not a public address"):
        check_destination(
            f"https://{host}/hooks", allow_http=False, allow_private=False, allowed_ports=None
        )


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"],
)
def test_a_public_address_in_any_of_its_forms_is_answered_as_it_resolved(address: str) -> None:
    [pinned] = pin(TARGET, allow_private=False, resolve=answering(address))
    assert ipaddress.ip_address(pinned) == ipaddress.ip_address(address)


def test_every_address_a_name_resolves_to_is_checked_and_all_are_answered_in_order() -> None:
    with pytest.raises(Refused, match=r"127\.0\.0\.1"):
        pin(TARGET, allow_private=False, resolve=answering("8.8.8.8", "127.0.0.1"))
    resolver = answering("8.8.4.4", "8.8.8.8")
    assert pin(TARGET, allow_private=False, resolve=resolver) == ["8.8.4.4", "8.8.8.8"]
    assert resolver.calls == 1


def test_private_addresses_pass_where_allowed_and_a_literal_needs_no_resolver() -> None:
    assert pin(TARGET, allow_private=True, resolve=answering("127.0.0.1")) == ["127.0.0.1"]
    literal = Target(scheme="https", host="127.0.0.1", port=443)
    unused = answering()
    assert pin(literal, allow_private=True, resolve=unused) == ["127.0.0.1"]
    assert unused.calls == 0


def test_a_name_that_does_not_resolve_is_refused() -> None:
    def fails(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(Refused, match="does not resolve"):
        pin(TARGET, allow_private=False, resolve=fails)
    with pytest.raises(Refused, match="does not resolve"):
        pin(TARGET, allow_private=False, resolve=answering())


@pytest.mark.parametrize(
    ("url", "port"),
    [("https://hooks.example/a", 443), ("https://hooks.example:443/a", 443)],
)
def test_port_443_passes_by_default(url: str, port: int) -> None:
    assert check_url(url, allow_http=False, allowed_ports=[443]).port == port


@pytest.mark.parametrize(
    "url", ["https://hooks.example:8443/a", "https://hooks.example:22/a", "http://hooks.example/a"]
)
def test_another_port_is_refused_naming_the_rule(url: str) -> None:
    with pytest.raises(InvalidInput, match=r"port \d+ is not allowed: .*port 443 only"):
        check_url(url, allow_http=True, allowed_ports=[443])


def test_a_port_the_setting_lists_passes_and_none_allows_any() -> None:
    assert check_url("https://hooks.example:8443/a", allow_http=False, allowed_ports=[443, 8443])
    assert check_url("http://127.0.0.1:9/a", allow_http=True, allowed_ports=None).port == 9


def test_an_international_name_is_sent_encoded() -> None:
    target = check_url("https://bücher.example/a", allow_http=False, allowed_ports=None)
    assert target.host == "xn--bcher-kva.example"
