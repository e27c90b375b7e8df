import logging

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

logger = logging.getLogger("tracker.health")


def database_is_reachable(session: Session) -> bool:
    try:
        session.execute(text("SELECT 1"))
        # End the check's transaction here: a connection lost after the SELECT must make this
        # answer "unreachable", not fail the request's commit later.
        session.rollback()
    except DBAPIError:
        logger.warning("Health check: database unreachable", exc_info=True)
        session.rollback()
        return False
    return True
