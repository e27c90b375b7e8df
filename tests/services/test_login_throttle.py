"""The login throttle's service: one key per client address, two limits over a sliding window,
and a success that forgets only its own address's failures."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from app.internal.errors import RateLimited
from app.services import login_throttle
from config import config
from tests.helpers.factories import unique

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("not an address\x00", "not an address"),
        ("", "unknown"),
        ("x" * 100, "x" * 64),
    ],
)
def test_each_client_is_one_key(address: str, key: str) -> None:
    assert login_throttle.normalized_address(address) == key


def fail(db: Session, email: str, address: str, times: int, at: datetime = NOW) -> None:
    for _ in range(times):
        login_throttle.record_failure(db, email=email, client_address=address, now=at)


def test_an_address_is_refused_at_the_limit_until_its_oldest_failure_leaves_the_window(
    db: Session,
) -> None:
    email, limit = unique("who") + "@example.com", config.settings.login_max_failures
    window = login_throttle.failure_window()
    fail(db, email, "203.0.113.7", 1, NOW - window + timedelta(seconds=30))
    fail(db, email, "203.0.113.7", limit - 1)
    with pytest.raises(RateLimited) as refused:
        login_throttle.refuse_if_throttled(db, email=email, client_address="203.0.113.7", now=NOW)
    assert refused.value.retry_after == 31  # the oldest failure leaves the window then
    # Another address is not refused, and once the oldest failure is over, nor is this one.
    login_throttle.refuse_if_throttled(db, email=email, client_address="198.51.100.1", now=NOW)
    later = NOW + timedelta(seconds=31)
    login_throttle.refuse_if_throttled(db, email=email, client_address="203.0.113.7", now=later)


def test_failures_from_many_addresses_lock_the_account(db: Session) -> None:
    email = unique("who") + "@example.com"
    settings = config.settings
    per_address = settings.login_max_failures - 1
    addresses = -(-settings.login_account_max_failures // per_address)
    for index in range(addresses):
        fail(db, email, f"192.0.2.{index}", per_address)
    with pytest.raises(RateLimited, match="for this account: try again later"):
        login_throttle.refuse_if_throttled(db, email=email, client_address="198.51.100.9", now=NOW)


def test_a_success_forgets_its_own_address_failures_only(db: Session) -> None:
    email, limit = unique("who") + "@example.com", config.settings.login_max_failures
    fail(db, email, "203.0.113.7", limit)
    fail(db, email, "198.51.100.1", limit)
    login_throttle.forget_failures(db, email=email, client_address="203.0.113.7")
    login_throttle.refuse_if_throttled(db, email=email, client_address="203.0.113.7", now=NOW)
    with pytest.raises(RateLimited):
        login_throttle.refuse_if_throttled(db, email=email, client_address="198.51.100.1", now=NOW)
