"""``/ops/workers``: the worker fleet as the api sees it over the service network (``jobs:admin``).

Two paths to the workers, the two an ECS service offers:

- **Every task** through Cloud Map: the service's name has a multivalue A answer, one address per
  running, healthy task, so the api resolves it and calls each task's ``/stats`` (in flight,
  processed, failed...). A load balancer could only ever show one task per call.
- **Any task** through the internal ALB: ``/ready`` load balanced, as another service calling the
  workers would (the ALB only routes to tasks that pass its health check).

Each call has ``worker.timeout_seconds`` (connect and read) and no retry: this is a view for a
person, a task that does not answer in time is shown ``unreachable`` rather than delaying the
others. The lookup and the calls run off the event loop (the lookup in the loop's executor, the
calls concurrently on it). The caller's trace continues into every call: the request's
``X-Amzn-Trace-Id`` is the parent of this route's span, and the instrumented HTTP client sends
its context on (X-Ray propagator, set by :mod:`servicekit.tracing`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Literal

import httpx
from fastapi import APIRouter, Request
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from pydantic import BaseModel, Field

from api.core.config import WorkerFleetSettings
from api.core.errors import ApiError
from api.deps import Admin, AuthenticatedRoute, RuntimeDep
from api.models import error_responses
from servicekit.consumer import ConsumerStats
from servicekit.tracing import tracer

router = APIRouter(prefix="/ops", tags=["ops"], route_class=AuthenticatedRoute)

_log = logging.getLogger(__name__)


class WorkerTask(BaseModel):
    address: str = Field(description="the task's IP address, as Cloud Map answered it")
    status: Literal["ok", "unreachable"]
    stats: ConsumerStats | None = Field(description="the task's /stats; null when unreachable")


class WorkerFleet(BaseModel):
    discovery_name: str = Field(description="the name resolved (one address per task)")
    tasks: list[WorkerTask] = Field(description="every task the name answered, by address")
    ready: Literal["ok", "fail", "unreachable"] = Field(
        description="the fleet's /ready through the internal load balancer (one task's answer)"
    )


@router.get(
    "/workers",
    operation_id="get_worker_fleet",
    summary="The worker fleet: every task's stats, and its readiness through the load balancer",
    responses=error_responses(401, 403, 503),
)
async def worker_fleet(request: Request, runtime: RuntimeDep, caller: Admin) -> WorkerFleet:
    fleet = runtime.settings.worker
    if fleet is None:
        raise ApiError(503, "not_configured", "the worker fleet's addresses are not configured")
    parent = propagate.extract(request.headers)
    with tracer(__name__).start_as_current_span(
        "GET /ops/workers", context=parent, kind=trace.SpanKind.SERVER
    ):
        async with _client(fleet) as client:
            addresses = await _resolve(fleet)
            *tasks, ready = await asyncio.gather(
                *(_task(client, fleet, address) for address in addresses),
                _ready_through_alb(client, fleet),
            )
    return WorkerFleet(discovery_name=fleet.discovery_name, tasks=tasks, ready=ready)


def _client(fleet: WorkerFleetSettings) -> httpx.AsyncClient:
    # trust_env=False: an HTTP(S)_PROXY in the environment must not carry in-VPC calls.
    client = httpx.AsyncClient(timeout=fleet.timeout_seconds, trust_env=False)
    HTTPXClientInstrumentor.instrument_client(client)
    return client


async def _resolve(fleet: WorkerFleetSettings) -> list[str]:
    """Every address the name answers (sorted); none when it does not resolve in time."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(fleet.timeout_seconds):
            answers = await loop.getaddrinfo(
                fleet.discovery_name, fleet.port, type=socket.SOCK_STREAM
            )
    except (OSError, TimeoutError) as error:
        # Cloud Map answers NXDOMAIN while no task is healthy: an empty fleet, not an error.
        _log.warning("%s did not resolve: %r", fleet.discovery_name, error)
        return []
    return sorted({str(answer[4][0]) for answer in answers}, key=ipaddress.ip_address)


async def _task(client: httpx.AsyncClient, fleet: WorkerFleetSettings, address: str) -> WorkerTask:
    host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    try:
        response = await client.get(f"http://{host}:{fleet.port}/stats")
        response.raise_for_status()
        # Validated against the worker's own type: a body of another shape is not shown as stats.
        return WorkerTask(address=address, status="ok", stats=response.json())
    except (httpx.HTTPError, ValueError) as error:  # ValueError: not JSON, or not the shape
        _log.warning("worker task %s: /stats failed: %r", address, error)
        return WorkerTask(address=address, status="unreachable", stats=None)


async def _ready_through_alb(
    client: httpx.AsyncClient, fleet: WorkerFleetSettings
) -> Literal["ok", "fail", "unreachable"]:
    try:
        response = await client.get(f"{fleet.alb_url.rstrip('/')}/ready")
    except httpx.HTTPError as error:
        _log.warning("the workers' load balancer did not answer: %r", error)
        return "unreachable"
    return "ok" if response.status_code == 200 else "fail"
