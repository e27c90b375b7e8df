"""Dependencies shared by the routers, each named once as an `Annotated` alias."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from config import config


def unit_of_work(session: Session) -> Iterator[Session]:
    """Yield `session`; commit if the route succeeds, roll back if anything fails."""
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    session.commit()


def get_db() -> Iterator[Session]:
    """A session for one request. Its scope is the route function, so the commit happens before
    the response is sent: a client that sees success can count on the data being stored."""
    with config.database.SessionLocal() as session:
        yield from unit_of_work(session)


SessionDep = Annotated[Session, Depends(get_db, scope="function")]
