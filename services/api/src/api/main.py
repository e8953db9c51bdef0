"""The API's ASGI application: ``api.main:app``, served by gunicorn (see :mod:`api.serve`).

Importing this module builds only the FastAPI object and its routes: settings, clients and the
database pool come from the lifespan, in each worker after fork.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware

from api.core.errors import install_error_handlers
from api.core.middleware import BodySizeLimit, HealthCheck, RequestContext
from api.core.runtime import Runtime
from api.models import error_responses
from api.routes import docs, health, jobs, ops

__all__ = ["app", "create_app"]


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Runtime]]:
    runtime = await run_in_threadpool(Runtime.start)
    try:
        # Lifespan state: the server copies it into every request's scope (request.state).
        yield {"runtime": runtime}
    finally:
        await run_in_threadpool(runtime.close)


def create_app() -> HealthCheck:
    """The ASGI application: the liveness answer in front of the FastAPI app."""
    fastapi_app = FastAPI(
        title="Jobs API",
        summary="Accepts jobs, stores them in PostgreSQL and queues them on SQS.",
        version="1.0.0",
        lifespan=lifespan,
        # Served by api.routes.docs, which reads the docs_enabled setting per request.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # Outermost first; HealthCheck is outside FastAPI altogether.
        middleware=[Middleware(RequestContext), Middleware(BodySizeLimit)],
        # Answered before routing (413) or by the last-resort handler (500), on any operation.
        responses=error_responses(413, 500),
    )
    install_error_handlers(fastapi_app)
    fastapi_app.include_router(health.router)
    fastapi_app.include_router(jobs.router)
    fastapi_app.include_router(ops.router)
    fastapi_app.include_router(docs.router)
    return HealthCheck(fastapi_app)


app = create_app()
