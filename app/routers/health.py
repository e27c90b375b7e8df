from fastapi import APIRouter, Response, status

from app.dependencies import SessionDep
from app.schemas.health import HealthPublic
from app.services.health import database_is_reachable

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=HealthPublic,
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": HealthPublic}},
)
def read_health(session: SessionDep, response: Response) -> HealthPublic:
    """Whether the API and its database answer."""
    if database_is_reachable(session):
        return HealthPublic(status="ok", database="ok")
    response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return HealthPublic(status="unavailable", database="unreachable")
