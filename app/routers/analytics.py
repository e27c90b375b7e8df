from typing import Annotated

from fastapi import APIRouter, Query

from app.dependencies import Reader, SessionDep
from app.internal.periods import YEARS_IN_UTC, Interval
from app.schemas.analytics import CustomersAnalytics, JobAnalytics, StepFunnel
from app.schemas.error import error_responses
from app.schemas.fields import NO_NUL, UtcDatetime
from app.services import analytics

router = APIRouter(
    prefix="/analytics", tags=["analytics"], responses=error_responses(401, 403, 422)
)

From = Annotated[
    UtcDatetime,
    Query(
        alias="from",
        description=f"Start of the range, inclusive (naive times are UTC). {YEARS_IN_UTC}",
    ),
]
To = Annotated[
    UtcDatetime,
    Query(description=f"End of the range, exclusive (naive times are UTC). {YEARS_IN_UTC}"),
]


@router.get("/jobs", response_model=JobAnalytics, responses=error_responses(404))
def read_job_analytics(
    session: SessionDep,
    caller: Reader,
    from_: From,
    to: To,
    interval: Interval = Interval.DAY,
    customer_id: int | None = None,
    tag: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
) -> JobAnalytics:
    """Jobs created in [from, to) by status, by configuration version and by period."""
    return analytics.job_analytics(
        session,
        caller=caller,
        start=from_,
        end=to,
        interval=interval,
        customer_id=customer_id,
        tag=tag,
    )


@router.get("/steps", response_model=StepFunnel, responses=error_responses(404))
def read_step_analytics(
    session: SessionDep,
    caller: Reader,
    tag: Annotated[str, Query(max_length=64, pattern=NO_NUL)],
    from_: From,
    to: To,
    version: Annotated[int | None, Query(ge=1, description="Default: the latest.")] = None,
    customer_id: int | None = None,
) -> StepFunnel:
    """The failure funnel of a configuration version's steps, for its jobs created in [from, to)."""
    return analytics.step_funnel(
        session,
        caller=caller,
        tag=tag,
        version=version,
        start=from_,
        end=to,
        customer_id=customer_id,
    )


@router.get("/customers", response_model=CustomersAnalytics)
def read_customer_analytics(
    session: SessionDep, caller: Reader, from_: From, to: To
) -> CustomersAnalytics:
    """Every customer's jobs, outcomes and cost in [from, to) (admins only)."""
    return analytics.customer_analytics(session, caller=caller, start=from_, end=to)
