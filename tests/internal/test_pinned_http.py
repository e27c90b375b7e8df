"""One POST over a connection to a given address: the Host header and the TLS server name stay
the receiver's name, the certificate is verified against that name, and a receiver that
drips its answer is cut off at the deadline of the whole exchange."""

from collections.abc import Iterator

import httpcore
import pytest

from app.internal import pinned_http
from app.internal.destinations import Target, check_url
from tests.helpers.tls import Authority, new_authority
from tests.helpers.webhook_receiver import DrippingReceiver, Receiver

NAME = "receiver.test"  # resolves nowhere: only the address given reaches the receiver
LOOPBACK = ("127.0.0.1",)
CLOSED = "127.0.0.2"  # loopback too, where nothing listens: the connection is refused


@pytest.fixture(scope="module")
def authority() -> Authority:
    return new_authority()


@pytest.fixture
def tls_receiver(authority: Authority) -> Iterator[Receiver]:
    receiver = Receiver(tls=authority.server_context(NAME))
    yield receiver
    receiver.stop()


def send(
    url: str, *, authority: Authority, deadline: float = 5, addresses: tuple[str, ...] = LOOPBACK
) -> int:
    target: Target = check_url(url, allow_http=True, allowed_ports=None)
    return pinned_http.post(
        target,
        url,
        addresses=addresses,
        body=b'{"a": 1}',
        headers={"content-type": "application/json"},
        deadline_seconds=deadline,
        ssl_context=authority.client_context(),
    )


def test_the_name_is_sent_and_verified_while_the_given_address_is_reached(
    authority: Authority, tls_receiver: Receiver
) -> None:
    assert send(tls_receiver.url_for(NAME) + "?x=1", authority=authority) == 200
    [request] = tls_receiver.requests
    assert request.headers["host"] == f"{NAME}:{tls_receiver.port}"
    assert request.path == "/hooks?x=1"
    assert request.body == b'{"a": 1}'
    assert tls_receiver.server_names == [NAME]


def test_an_ipv6_address_is_sent_in_brackets_in_the_host_header(authority: Authority) -> None:
    receiver = Receiver()
    try:
        target = check_url(receiver.url_for("[::1]"), allow_http=True, allowed_ports=None)
        assert target.host == "::1"
        assert send(receiver.url_for("[::1]"), authority=authority) == 200
        assert receiver.requests[0].headers["host"] == f"[::1]:{receiver.port}"
    finally:
        receiver.stop()
    assert pinned_http.host_header(Target("https", "2001:db8::1", 443)) == "[2001:db8::1]"
    assert pinned_http.host_header(Target("https", "receiver.test", 443)) == "receiver.test"
    assert pinned_http.host_header(Target("http", "receiver.test", 8080)) == "receiver.test:8080"


def test_an_address_that_refuses_is_passed_for_the_next_one_checked(
    authority: Authority, tls_receiver: Receiver
) -> None:
    url = tls_receiver.url_for(NAME)
    assert send(url, authority=authority, addresses=(CLOSED, "127.0.0.1")) == 200
    assert len(tls_receiver.requests) == 1
    with pytest.raises(httpcore.ConnectError):
        send(url, authority=authority, addresses=(CLOSED, CLOSED))


def test_a_certificate_for_another_name_is_refused(authority: Authority) -> None:
    receiver = Receiver(tls=authority.server_context("someone-else.test"))
    try:
        with pytest.raises(httpcore.ConnectError, match="certificate"):
            send(receiver.url_for(NAME), authority=authority)
        assert receiver.requests == []
    finally:
        receiver.stop()


def test_a_certificate_from_an_unknown_authority_is_refused(tls_receiver: Receiver) -> None:
    with pytest.raises(httpcore.ConnectError, match="certificate"):
        send(tls_receiver.url_for(NAME), authority=new_authority())
    assert tls_receiver.requests == []


def test_a_receiver_that_drips_its_answer_is_cut_off_at_the_deadline(
    authority: Authority,
) -> None:
    dripping = DrippingReceiver(interval=0.02)
    try:
        with pytest.raises(httpcore.TimeoutException):
            send(dripping.url, authority=authority, deadline=0.5)
        # The sender hung up mid-answer: it is not holding the connection any more.
        assert dripping.hung_up.wait(timeout=30)
    finally:
        dripping.stop()
