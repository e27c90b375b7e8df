"""The login throttle: failed logins counted in the database (Lambda instances share nothing).

Two limits over one sliding window (`LOGIN_FAILURE_WINDOW_MINUTES`):

- per account and client address (`LOGIN_MAX_FAILURES`): someone guessing from one place is
  stopped there, and the owner, logging in from elsewhere, is not locked out by it;
- per account from every address (`LOGIN_ACCOUNT_MAX_FAILURES`, higher): a guess spread over
  many addresses is still stopped, at the price of locking the account while it lasts.

Attempts for one email are serialised by an advisory lock held until the transaction ends, so
concurrent guesses cannot all pass the check before any of them is counted.
"""

import hashlib
import ipaddress
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.internal.errors import RateLimited
from app.models import LoginFailure
from config import config

# Advisory lock keys here are this namespace (b"LOGN") and a hash of the email.
LOCK_NAMESPACE = 0x4C4F474E
MAX_ADDRESS_LENGTH = 64
# An IPv6 client usually holds a whole /64: counting its addresses one by one would give it
# billions of tries.
IPV6_PREFIX = 64


def normalized_address(address: str) -> str:
    """One key per client: an IPv4 address, an IPv6 /64, or the text given (trimmed)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address.replace("\x00", "")[:MAX_ADDRESS_LENGTH] or "unknown"
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{parsed}/{IPV6_PREFIX}", strict=False))
    return str(parsed)


def failure_window() -> timedelta:
    """How long a failed login counts (the cleanup forgets those older)."""
    return timedelta(minutes=config.settings.login_failure_window_minutes)


def _lock_key(email: str) -> int:
    return int.from_bytes(hashlib.sha256(email.encode()).digest()[:4], "big", signed=True)


def refuse_if_throttled(
    session: Session, *, email: str, client_address: str, now: datetime
) -> None:
    """Take the email's lock, then answer RateLimited if either limit is reached."""
    session.execute(select(func.pg_advisory_xact_lock(LOCK_NAMESPACE, _lock_key(email))))
    from_address = LoginFailure.client_address == client_address
    address_count, address_oldest, account_count, account_oldest = session.execute(
        select(
            func.count().filter(from_address),
            func.min(LoginFailure.failed_at).filter(from_address),
            func.count(),
            func.min(LoginFailure.failed_at),
        ).where(LoginFailure.email == email, LoginFailure.failed_at > now - failure_window())
    ).one()
    settings = config.settings
    if address_count >= settings.login_max_failures:
        _refuse("this account from your address", address_oldest, now)
    if account_count >= settings.login_account_max_failures:
        _refuse("this account", account_oldest, now)


def _refuse(whose: str, oldest_failure: datetime, now: datetime) -> None:
    # The window slides: one more attempt is allowed once the oldest failure in it is over.
    retry_after = oldest_failure + failure_window() - now
    raise RateLimited(
        f"Too many failed logins for {whose}: try again later",
        retry_after=max(1, int(retry_after.total_seconds()) + 1),
    )


def record_failure(session: Session, *, email: str, client_address: str, now: datetime) -> None:
    session.add(LoginFailure(email=email, client_address=client_address, failed_at=now))
    session.flush()


def forget_failures(session: Session, *, email: str, client_address: str) -> None:
    """After a success: that address's failures no longer count; others' still do."""
    session.execute(
        delete(LoginFailure).where(
            LoginFailure.email == email, LoginFailure.client_address == client_address
        )
    )
