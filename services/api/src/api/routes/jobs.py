"""``/jobs``: create a job (stored; the outbox relay queues it on SQS), read one, list them.

Every route needs a bearer token: ``jobs:read`` to read, ``jobs:write`` to create (:mod:`api.deps`).
Every job belongs to the caller that created it: a caller reads and lists only its own (another
caller's job is a 404, as if it did not exist), an admin every caller's.
"""

from __future__ import annotations

import logging
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Query, Response

from api.core.errors import ApiError
from api.core.security import Principal
from api.deps import AuthenticatedRoute, Reader, RuntimeDep, Writer
from api.models import JobCreate, error_responses
from jobs import repository

router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=AuthenticatedRoute)

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


# OpenAPI links: how a client (and a stateful tester) goes from one answer to the next request.
_READ_THE_JOB = {
    "GetJob": {"operationId": "get_job", "parameters": {"job_id": "$response.body#/id"}}
}
_NEXT_PAGE = {
    "NextPage": {
        "operationId": "list_jobs",
        "description": "the next page while `next_cursor` is not null (with the same `status`)",
        "parameters": {"cursor": "$response.body#/next_cursor"},
    }
}


@router.post(
    "",
    operation_id="create_job",
    status_code=201,
    responses={
        200: {
            "model": repository.Job,
            "description": "Replay: the job this Idempotency-Key created",
            "links": _READ_THE_JOB,
        },
        201: {
            "description": "Job stored; its SQS message follows (``enqueued_at`` once sent)",
            "links": _READ_THE_JOB,
        },
        **error_responses(401, 403, 409, 413, 422, 503),
    },
)
def create_job(
    body: JobCreate,
    runtime: RuntimeDep,
    caller: Writer,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> repository.Job:
    """Store the job; the outbox relay sends its SQS message (201: the job resource exists).

    The payload is validated against its type's model (422 naming the field). The example types
    ``sleep`` and ``fail`` are accepted only in development or with ``DEMO_JOB_TYPES=true``.
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
    request = body.root
    if request.type not in runtime.settings.job_types:
        raise ApiError(
            422,
            "validation_error",
            "invalid request: body.type",
            details=[
                {
                    "field": "body.type",
                    "message": f"unknown job type {request.type!r}",
                    "type": "unknown_job_type",
                }
            ],
        )
    with runtime.database.connection() as conn:
        try:
            created = repository.create(
                conn,
                owner=caller.subject,
                job_type=request.type,
                payload=request.payload.model_dump(mode="json"),
                idempotency_key=idempotency_key,
            )
        except repository.IdempotencyKeyReused as error:
            raise ApiError(409, "idempotency_key_reused", str(error)) from None
    job = created.job
    if created.created:
        _log.info(
            "job %s accepted",
            job.id,
            extra={"job_id": str(job.id), "job_type": job.type, "principal": caller.subject},
        )
    response.status_code = 201 if created.created else 200
    response.headers["Location"] = f"/jobs/{job.id}"
    return job


def _readable_owner(caller: Principal) -> str | None:
    """Whose jobs ``caller`` may read: its own, or every owner's (None) when it is an admin."""
    return None if caller.is_admin else caller.subject


@router.get("/{job_id}", operation_id="get_job", responses=error_responses(401, 403, 404, 422, 503))
def get_job(job_id: UUID, runtime: RuntimeDep, caller: Reader) -> repository.Job:
    with runtime.database.connection() as conn:
        job = repository.get(conn, job_id, owner=_readable_owner(caller))
    if job is None:
        raise ApiError(404, "job_not_found", f"no job {job_id}")
    return job


@router.get(
    "",
    operation_id="list_jobs",
    responses={200: {"links": _NEXT_PAGE}, **error_responses(401, 403, 422, 503)},
)
def list_jobs(
    runtime: RuntimeDep,
    caller: Reader,
    status: Annotated[
        repository.JobStatus | None, Query(description="only jobs in this status")
    ] = None,
    cursor: Annotated[
        str | None,
        Query(
            pattern=repository.CURSOR_PATTERN,
            description="`next_cursor` of the previous page (opaque: pass it back as given)",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> repository.JobPage:
    """Jobs newest first, one page at a time (keyset pagination: stable under inserts)."""
    with runtime.database.connection() as conn:
        return repository.list_jobs(
            conn, status=status, limit=limit, cursor=cursor, owner=_readable_owner(caller)
        )
