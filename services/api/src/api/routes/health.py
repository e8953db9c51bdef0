"""``/health`` (liveness) and ``/ready`` (readiness)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.core.middleware import HEALTH_PATH
from api.deps import RuntimeDep
from api.models import Liveness, Readiness

router = APIRouter(tags=["health"])


@router.get(HEALTH_PATH, summary="Liveness")
async def health() -> Liveness:
    """The process answers. Checks no dependency: this is the ALB target group's health check.

    Answered before FastAPI by :class:`api.core.middleware.HealthCheck`; this route documents it
    and answers methods other than GET and HEAD (405).
    """
    return Liveness(status="ok")


@router.get(
    "/ready",
    summary="Readiness",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency is unreachable"}},
)
def ready(runtime: RuntimeDep) -> JSONResponse:
    """The database and the SQS queue answer: ``ok`` or ``fail``, nothing more.

    A failing check's reason (host names, driver messages) is logged when the check starts
    failing, never answered: the path is reachable through the load balancer.

    Settings are not a check of their own: a worker whose settings do not load never starts
    serving (its lifespan fails and gunicorn exits), so any answer here means they loaded.
    """
    report = runtime.health.readiness()
    answer = Readiness(status="ok" if report.ok else "fail")
    return JSONResponse(answer.model_dump(), status_code=200 if report.ok else 503)
