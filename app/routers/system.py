from datetime import UTC, datetime

from fastapi import APIRouter

from app.dependencies import AdminUser, SessionDep
from app.schemas.error import error_responses
from app.schemas.system_status import SystemStatus
from app.services import system_status
from config import config

router = APIRouter(prefix="/system", tags=["system"], responses=error_responses(401, 403))


@router.get("/status", response_model=SystemStatus)
def read_system_status(session: SessionDep, caller: AdminUser) -> SystemStatus:
    """Admins: whether each scheduled task runs on time and how far behind each backlog is."""
    # Here, not at import: the tasks' code (the webhook sender and its HTTP client) has no
    # place on the API's cold start, and this route is read rarely.
    from app.scheduled import SCHEDULED_TASKS

    return system_status.read_status(
        session,
        tasks=[system_status.Task(task.name, task.cadence) for task in SCHEDULED_TASKS.values()],
        now=datetime.now(UTC),
        retention_days=config.settings.event_retention_days,
    )
