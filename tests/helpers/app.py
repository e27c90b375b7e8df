"""The real app, adjusted for the length of a test: routes of its own, or another database."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fastapi import APIRouter
from sqlalchemy.orm import Session

from app.dependencies import get_db, unit_of_work
from app.main import app
from config.database import Database


@contextmanager
def extra_routes(router: APIRouter) -> Iterator[None]:
    """The app with `router`'s routes too (routes that fail on purpose, or that no client of the
    real API may call yet)."""
    before = list(app.router.routes)
    app.include_router(router)
    try:
        yield
    finally:
        app.router.routes[:] = before


@contextmanager
def sessions_from(get_session: Callable[[], Iterator[Session]]) -> Iterator[None]:
    """The app's requests take their session from `get_session` instead of `get_db`."""
    app.dependency_overrides[get_db] = get_session
    try:
        yield
    finally:
        app.dependency_overrides.pop(get_db, None)


@contextmanager
def requests_on(database: Database) -> Iterator[None]:
    """The app's requests go to `database`, each in a session and transaction of its own, as
    they do on the configured one."""

    def get_session() -> Iterator[Session]:
        with database.SessionLocal() as session:
            yield from unit_of_work(session)

    with sessions_from(get_session):
        yield
