"""``/jobs``: create a job (stored; the outbox relay queues it on SQS), read one, list them."""

from __future__ import annotations

import logging
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Query, Response

from api.core.errors import ApiError
from api.deps import RuntimeDep
from api.models import JobCreate, error_responses
from jobs import repository

router = APIRouter(prefix="/jobs", tags=["jobs"])

_log = logging.getLogger(__name__)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="a retry with the same key returns the job the first request created "
        "(200); visible ASCII characters",
    ),
]


@router.post(
    "",
    status_code=201,
    responses={
        200: {
            "model": repository.Job,
            "description": "Replay: the job this Idempotency-Key created",
        },
        201: {"description": "Job stored; its SQS message follows (``enqueued_at`` once sent)"},
        **error_responses(409, 413, 422, 503),
    },
)
def create_job(
    body: JobCreate,
    runtime: RuntimeDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> repository.Job:
    """Store the job; the outbox relay sends its SQS message (201: the job resource exists).

    The request commits the job and nothing else: no AWS call, so it answers as fast while SQS is
    unreachable. A trigger wakes the relay, which sends the message and sets ``enqueued_at`` (see
    ``jobs.outbox``). 503 ``intake_paused`` while the ``accept_jobs`` feature flag is off.
    """
    if not runtime.flags.get().accept_jobs:
        raise ApiError(
            503,
            "intake_paused",
            "job intake is paused (feature flag accept_jobs is off), retry later",
            headers={"Retry-After": str(runtime.settings.retry_after_seconds)},
        )
    with runtime.database.connection() as conn:
        try:
            created = repository.create(
                conn,
                job_type=body.type.value,
                payload=body.payload,
                idempotency_key=idempotency_key,
            )
        except repository.IdempotencyKeyReused as error:
            raise ApiError(409, "idempotency_key_reused", str(error)) from None
    job = created.job
    if created.created:
        _log.info("job %s accepted", job.id, extra={"job_id": str(job.id), "job_type": job.type})
    response.status_code = 201 if created.created else 200
    response.headers["Location"] = f"/jobs/{job.id}"
    return job


@router.get("/{job_id}", responses=error_responses(404, 422, 503))
def get_job(job_id: UUID, runtime: RuntimeDep) -> repository.Job:
    with runtime.database.connection() as conn:
        job = repository.get(conn, job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no job {job_id}")
    return job


@router.get("", responses=error_responses(422, 503))
def list_jobs(
    runtime: RuntimeDep,
    status: Annotated[
        repository.JobStatus | None, Query(description="only jobs in this status")
    ] = None,
    cursor: Annotated[
        str | None, Query(max_length=200, description="`next_cursor` of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> repository.JobPage:
    """Jobs newest first, one page at a time (keyset pagination: stable under inserts)."""
    try:
        with runtime.database.connection() as conn:
            page = repository.list_jobs(conn, status=status, limit=limit, cursor=cursor)
    except repository.InvalidCursor:
        raise ApiError(
            422,
            "validation_error",
            "invalid request: query.cursor",
            details=[
                {
                    "field": "query.cursor",
                    "message": "not a cursor this API gave",
                    "type": "value_error",
                }
            ],
        ) from None
    return page
