"""The jobs repository: every read and write of the ``jobs`` table, shared by all services.

Each function takes an open connection and runs in the caller's transaction: none commits. That is
what lets a worker's handler write its own rows and mark the job succeeded in one commit.

A job's way through (statuses in the ``status`` column):

- API: :func:`create` (``queued``, ``enqueued_at`` NULL) and commit: that is all a request does.
  A trigger NOTIFYs ``jobs_outbox`` and the outbox relay (:mod:`jobs.outbox`) sends the message:
  :func:`claim_unsent` and commit, send, then :func:`mark_enqueued` (or :func:`release_claims`).
  The row is committed before the message exists, so a worker never receives an id it cannot
  read, and a job whose send fails is still there to send again (the transactional outbox).
- Worker: :func:`start` and commit (``running``, ``attempts`` + 1, a lease until
  ``lease_expires_at``; ``None`` means the job is finished or unknown: acknowledge the message).
  While the handler runs, :func:`renew_leases` (one UPDATE per heartbeat for every job the worker
  holds). Then, in one transaction, the handler's writes
  and :func:`mark_succeeded`, which raises :class:`JobAlreadyFinished` if a duplicate delivery won
  meanwhile, so the ``with`` block rolls the handler's writes back: effects happen exactly once.
  On a handler error :func:`mark_failed` (retried later); when retries are exhausted or the
  error is final :func:`mark_dead`. Both record an ``error_code`` and a short ``error`` message
  written for clients (:mod:`jobs.types`).
- Scheduler: the outbox sweep (the relay's code, as a backstop), :func:`resend_lost` (a message
  that left the queue without finishing its job), :func:`mark_dead` for the dead-letter queue's
  messages, :func:`redrive_dead` (chosen dead jobs back to the outbox), :func:`requeue_stuck`
  (running jobs whose lease expired: their worker is gone), :func:`purge_finished`.

The SQS message is :class:`JobMessage` (:func:`message_body` writes it): the job's id, as the row
is the truth.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, LiteralString
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import class_row, tuple_row
from psycopg.types.json import Jsonb
from pydantic import (
    BaseModel,
    ConfigDict,
    GetJsonSchemaHandler,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from typing_extensions import TypeAliasType

__all__ = [
    "CURSOR_PATTERN",
    "MAX_PAYLOAD_DEPTH",
    "Created",
    "IdempotencyKeyReused",
    "InvalidCursor",
    "InvalidPayload",
    "Job",
    "JobAlreadyFinished",
    "JobMessage",
    "JobPage",
    "JobStatus",
    "claim_unsent",
    "create",
    "get",
    "list_jobs",
    "mark_dead",
    "mark_enqueued",
    "mark_failed",
    "mark_succeeded",
    "message_body",
    "purge_finished",
    "redrive_dead",
    "release_claims",
    "renew_leases",
    "requeue_stuck",
    "resend_lost",
    "start",
    "storable_payload",
]

MAX_PAGE_SIZE = 1000
# The error is a short message for clients (jobs.types.Failure); a bound all the same.
MAX_ERROR_LENGTH = 1000
MAX_PAYLOAD_DEPTH = 32


class InvalidPayload(ValueError):
    """A payload PostgreSQL's jsonb cannot store; the message names the problem, not the value."""


def storable_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` as a dict, or :class:`InvalidPayload` for what the jsonb column refuses.

    NUL characters, unpaired surrogates (``"\\ud800"``), NaN and infinite numbers, and nesting
    deeper than :data:`MAX_PAYLOAD_DEPTH`: JSON parsing lets each through, and each would fail
    the INSERT with a database error. Iterative, so a deep payload cannot exhaust the stack.
    """
    payload = dict(payload)
    pending: list[tuple[Any, int]] = [(payload, 0)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_PAYLOAD_DEPTH:
            raise InvalidPayload(f"nested deeper than {MAX_PAYLOAD_DEPTH} levels")
        if isinstance(value, dict):
            pending.extend((key, depth + 1) for key in value)
            pending.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list | tuple):
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            if "\x00" in value:
                raise InvalidPayload("a string holds a NUL character (\\u0000)")
            if not value.isascii():
                try:
                    value.encode()
                except UnicodeEncodeError:
                    raise InvalidPayload("a string holds an unpaired surrogate") from None
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidPayload("a number is not finite (NaN or infinity)")
    return payload


# What the payload's JSON schema states (the API's document): JSON whose strings, keys included,
# hold no NUL. Only described: storable_payload validates, iteratively and with the depth limit
# a schema cannot state.
NUL_FREE_PATTERN = r"^[^\x00]*$"


class NulFreeKeys:
    """JSON-schema metadata for an object: its keys hold no NUL (``propertyNames``)."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return handler(core_schema) | {"propertyNames": {"pattern": NUL_FREE_PATTERN}}


NulFreeStr = Annotated[str, StringConstraints(pattern=NUL_FREE_PATTERN)]
"""A string a payload may hold: jsonb refuses NUL characters (the schema says so too)."""

StorableJson = TypeAliasType(
    "StorableJson",
    "NulFreeStr | int | float | bool"
    " | list[StorableJson] | Annotated[dict[str, StorableJson], NulFreeKeys()] | None",
)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"


class Job(BaseModel):
    """One row of ``jobs``. ``enqueued_at`` is NULL until its SQS message was sent.

    ``owner`` is the caller that created the job (the authenticated subject); callers see only
    their own jobs, admins every owner's.
    ``error_code`` and ``error``: why the latest attempt failed, as clients may see it.
    ``lease_expires_at``: while ``running``, when the job counts as abandoned unless renewed.
    """

    model_config = ConfigDict(frozen=True)

    id: UUID
    type: str
    payload: dict[str, Any]
    status: JobStatus
    attempts: int
    idempotency_key: str | None
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    enqueued_at: datetime | None
    owner: str
    error_code: str | None
    lease_expires_at: datetime | None


class Created(BaseModel):
    """What :func:`create` did: ``created`` is False when the idempotency key already existed."""

    job: Job
    created: bool


class JobPage(BaseModel):
    """A page of jobs, newest first; pass ``next_cursor`` back for the next page (None: last)."""

    items: list[Job]
    next_cursor: str | None


class JobMessage(BaseModel):
    """The jobs queue's message body: the job's id (the row is the truth) and its type."""

    model_config = ConfigDict(extra="ignore")

    job_id: UUID
    type: str | None = None  # informational (logs); the row's type decides the handler

    @staticmethod
    def job_id_in(body: str) -> UUID | None:
        """The job id an otherwise unusable body still names (to mark a poison job dead)."""
        try:
            return UUID(str(json.loads(body)["job_id"]))
        except (ValueError, KeyError, TypeError):
            return None


def message_body(job: Job) -> str:
    """The SQS message body for ``job``: what the API and the outbox sweep send."""
    return JobMessage(job_id=job.id, type=job.type).model_dump_json()


class IdempotencyKeyReused(Exception):
    """The key already belongs to a job with another type or payload (never quotes the payload)."""

    def __init__(self, job_id: UUID) -> None:
        super().__init__(f"idempotency key already used by job {job_id} with a different request")
        self.job_id = job_id


class JobAlreadyFinished(Exception):
    """The job cannot be marked succeeded: it is finished already, or it does not exist."""

    def __init__(self, job_id: UUID, status: JobStatus | None) -> None:
        state = f"already {status.value}" if status is not None else "does not exist"
        super().__init__(f"job {job_id} {state}")
        self.job_id = job_id
        self.status = status


class InvalidCursor(ValueError):
    """A string that is not of a cursor's form (:data:`CURSOR_PATTERN`)."""


_COLUMNS = sql.SQL(", ").join(sql.Identifier(name) for name in Job.model_fields)
_ACTIVE = sql.SQL("status IN ('queued', 'running', 'failed')")


def _query(template: LiteralString) -> sql.Composed:
    """``template`` with ``{columns}`` (every Job field) and ``{active}`` (not finished)."""
    return sql.SQL(template).format(columns=_COLUMNS, active=_ACTIVE)


_INSERT = _query(
    "INSERT INTO jobs (owner, type, payload, idempotency_key) "
    "VALUES (%(owner)s, %(type)s, %(payload)s, %(key)s) "
    "ON CONFLICT (owner, idempotency_key) DO NOTHING RETURNING {columns}"
)
_BY_KEY = _query("SELECT {columns} FROM jobs WHERE owner = %(owner)s AND idempotency_key = %(key)s")
# owner NULL: any owner's job (admins and the services' own reads).
_BY_ID = _query(
    "SELECT {columns} FROM jobs "
    "WHERE id = %(id)s AND (%(owner)s::text IS NULL OR owner = %(owner)s)"
)
_START = _query(
    "UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = clock_timestamp(), "
    "updated_at = clock_timestamp(), enqueued_at = coalesce(enqueued_at, clock_timestamp()), "
    "lease_expires_at = clock_timestamp() + %(lease)s "
    "WHERE id = %(id)s AND {active} RETURNING {columns}"
)
# Not a change of state: updated_at stays, so a renewal is cheap and does not hide a stuck job.
_RENEW = sql.SQL(
    "UPDATE jobs SET lease_expires_at = clock_timestamp() + %(lease)s "
    "WHERE id = ANY(%(ids)s) AND status = 'running' RETURNING id"
)
_SUCCEED = _query(
    "UPDATE jobs SET status = 'succeeded', result = %(result)s, error = NULL, error_code = NULL, "
    "lease_expires_at = NULL, finished_at = clock_timestamp(), updated_at = clock_timestamp() "
    "WHERE id = %(id)s AND {active} RETURNING {columns}"
)
_FAIL = _query(
    "UPDATE jobs SET status = 'failed', error = %(error)s, error_code = %(code)s, "
    "lease_expires_at = NULL, updated_at = clock_timestamp() "
    "WHERE id = %(id)s AND status = 'running' RETURNING {columns}"
)
_KILL = _query(
    "UPDATE jobs SET status = 'dead', error = coalesce(%(error)s, error), "
    "error_code = coalesce(%(code)s, error_code), lease_expires_at = NULL, "
    "finished_at = clock_timestamp(), updated_at = clock_timestamp() "
    "WHERE id = %(id)s AND {active} RETURNING {columns}"
)
_ENQUEUED = _query(
    "UPDATE jobs SET enqueued_at = clock_timestamp(), send_claimed_until = NULL, "
    "updated_at = clock_timestamp() "
    "WHERE id = ANY(%(ids)s) AND enqueued_at IS NULL RETURNING {columns}"
)
# The claim is committed before the send: SKIP LOCKED only keeps concurrent claims from waiting
# on each other; send_claimed_until is what keeps a second relay off a job while it is sent.
_CLAIM = sql.SQL(
    "WITH unsent AS (SELECT id AS unsent_id FROM jobs "
    "WHERE status = 'queued' AND enqueued_at IS NULL "
    "AND (send_claimed_until IS NULL OR send_claimed_until < clock_timestamp()) "
    "AND updated_at < clock_timestamp() - %(age)s "
    "ORDER BY updated_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
    "UPDATE jobs SET send_claimed_until = clock_timestamp() + %(claim_for)s "
    "FROM unsent WHERE jobs.id = unsent.unsent_id RETURNING jobs.id AS job_id, jobs.type"
)
_RELEASE = sql.SQL(
    "UPDATE jobs SET send_claimed_until = NULL WHERE id = ANY(%(ids)s) AND enqueued_at IS NULL"
)
# Sent, not finished, and unchanged for longer than SQS can keep its message: back to the outbox.
_LOST = _query(
    "WITH lost AS (SELECT id AS lost_id FROM jobs "
    "WHERE status IN ('queued', 'failed') AND enqueued_at IS NOT NULL "
    "AND updated_at < clock_timestamp() - %(age)s "
    "ORDER BY updated_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
    "UPDATE jobs SET status = 'queued', enqueued_at = NULL, send_claimed_until = NULL, "
    "updated_at = clock_timestamp() FROM lost WHERE jobs.id = lost.lost_id RETURNING {columns}"
)
# Only an expired lease: a live worker renews it on every heartbeat, however long the job runs.
# A row lock means a live transaction works on the job: SKIP LOCKED leaves it alone. Requeued
# jobs get enqueued_at NULL, so the outbox sweep sends them again.
_REQUEUE = _query(
    "WITH stuck AS (SELECT id AS stuck_id, "
    "attempts >= (%(max_attempts)s::jsonb ->> type)::integer AS give_up FROM jobs "
    "WHERE status = 'running' AND lease_expires_at < clock_timestamp() "
    "ORDER BY lease_expires_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
    "UPDATE jobs SET "
    "status = CASE WHEN give_up THEN 'dead' ELSE 'queued' END, "
    "error_code = 'lease_expired', "
    "error = CASE WHEN give_up THEN 'its worker stopped on each of ' || attempts || ' attempts' "
    "ELSE 'its worker stopped; queued again' END, "
    "finished_at = CASE WHEN give_up THEN clock_timestamp() END, "
    "lease_expires_at = NULL, enqueued_at = NULL, updated_at = clock_timestamp() "
    "FROM stuck WHERE jobs.id = stuck.stuck_id RETURNING {columns}"
)
_PURGE = _query(
    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs "
    "WHERE status IN ('succeeded', 'dead') AND finished_at < clock_timestamp() - %(age)s "
    "LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
)


def _one(
    conn: psycopg.Connection[Any], query: sql.Composed, params: Mapping[str, Any]
) -> Job | None:
    with conn.cursor(row_factory=class_row(Job)) as cursor:
        return cursor.execute(query, params).fetchone()


def _all(
    conn: psycopg.Connection[Any], query: sql.Composed, params: Mapping[str, Any]
) -> list[Job]:
    with conn.cursor(row_factory=class_row(Job)) as cursor:
        return cursor.execute(query, params).fetchall()


def _same_request(job: Job, job_type: str, payload: Mapping[str, Any]) -> bool:
    # Compare as JSON would store it (tuples become lists, and so on).
    return job.type == job_type and job.payload == json.loads(json.dumps(dict(payload)))


def create(
    conn: psycopg.Connection[Any],
    *,
    owner: str,
    job_type: str,
    payload: Mapping[str, Any],
    idempotency_key: str | None = None,
) -> Created:
    """Insert a queued job of ``owner``, or return ``owner``'s job that has ``idempotency_key``.

    Keys are per owner: another owner's job with the same key is neither returned nor a conflict.
    Race safe: of concurrent creates with one owner and key, one inserts and the others (waiting
    on the unique index until it commits) return its job. Raises :class:`IdempotencyKeyReused`
    when the key's job was created with another type or payload, :class:`InvalidPayload` (a
    ValueError) before any SQL when the payload cannot be stored.
    """
    params = {
        "owner": owner,
        "type": job_type,
        "payload": Jsonb(storable_payload(payload)),
        "key": idempotency_key,
    }
    # Two rounds at most: the row that blocked the insert may be purged before the read sees it.
    for _ in range(2):
        inserted = _one(conn, _INSERT, params)
        if inserted is not None:
            return Created(job=inserted, created=True)
        existing = _one(conn, _BY_KEY, params)
        if existing is not None:
            if not _same_request(existing, job_type, payload):
                raise IdempotencyKeyReused(existing.id)
            return Created(job=existing, created=False)
    raise RuntimeError(f"idempotency key conflict could not be resolved for type {job_type!r}")


def get(conn: psycopg.Connection[Any], job_id: UUID, owner: str | None = None) -> Job | None:
    """The job, or None when it does not exist or (``owner`` given) belongs to another owner."""
    return _one(conn, _BY_ID, {"id": job_id, "owner": owner})


# A cursor is the last job's position: created_at in microseconds since the epoch (16 digits)
# and its id (32 hex digits). Every string of that form is a position, so the API can state the
# form (CURSOR_PATTERN) and accept everything it allows; a made-up cursor only starts the page
# elsewhere in the caller's own listing.
CURSOR_PATTERN = r"^[0-9]{16}[0-9a-f]{32}$"
_CURSOR = re.compile(CURSOR_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _encode_cursor(job: Job) -> str:
    return f"{(job.created_at - _EPOCH) // _MICROSECOND:016d}{job.id.hex}"


def _decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    if not _CURSOR.fullmatch(cursor):
        raise InvalidCursor(f"a cursor matches {CURSOR_PATTERN}")
    return _EPOCH + int(cursor[:16]) * _MICROSECOND, UUID(hex=cursor[16:])


def list_jobs(
    conn: psycopg.Connection[Any],
    *,
    status: JobStatus | None = None,
    limit: int = 50,
    cursor: str | None = None,
    owner: str | None = None,
) -> JobPage:
    """Jobs newest first, ``limit`` per page (keyset pagination).

    Optionally only one status, only ``owner``'s jobs (None: every owner's, for admins).
    """
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    # Each filter is added only when given, so every variant's plan can use its index.
    conditions: list[sql.Composable] = []
    params: dict[str, Any] = {"limit": limit + 1}
    if owner is not None:
        conditions.append(sql.SQL("owner = %(owner)s"))
        params["owner"] = owner
    if status is not None:
        conditions.append(sql.SQL("status = %(status)s"))
        params["status"] = status.value
    if cursor is not None:
        params["created_at"], params["id"] = _decode_cursor(cursor)
        conditions.append(sql.SQL("(created_at, id) < (%(created_at)s, %(id)s)"))
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
    query = sql.Composed(
        [
            sql.SQL("SELECT {columns} FROM jobs").format(columns=_COLUMNS),
            where,
            sql.SQL(" ORDER BY created_at DESC, id DESC LIMIT %(limit)s"),
        ]
    )
    rows = _all(conn, query, params)
    if len(rows) > limit:
        return JobPage(items=rows[:limit], next_cursor=_encode_cursor(rows[limit - 1]))
    return JobPage(items=rows, next_cursor=None)


def start(conn: psycopg.Connection[Any], job_id: UUID, *, lease: timedelta) -> Job | None:
    """Mark the job running, count the attempt, lease it for ``lease``; None when it is
    finished or unknown (acknowledge its message)."""
    return _one(conn, _START, {"id": job_id, "lease": lease})


def renew_leases(
    conn: psycopg.Connection[Any], job_ids: Collection[UUID], *, lease: timedelta
) -> set[UUID]:
    """Extend the lease of the running jobs among ``job_ids`` (one UPDATE); those renewed."""
    if not job_ids:
        return set()
    with conn.cursor(row_factory=tuple_row) as cursor:
        rows = cursor.execute(_RENEW, {"ids": list(job_ids), "lease": lease}).fetchall()
    return {job_id for (job_id,) in rows}


def mark_succeeded(
    conn: psycopg.Connection[Any], job_id: UUID, result: Mapping[str, Any] | None = None
) -> Job:
    """Record success in the caller's transaction; raises :class:`JobAlreadyFinished` otherwise.

    If a duplicate delivery committed first, this waits for its row lock, finds the job
    succeeded and raises, so the caller's transaction (its handler's writes) is rolled back.
    """
    stored = None if result is None else Jsonb(dict(result))
    job = _one(conn, _SUCCEED, {"id": job_id, "result": stored})
    if job is None:
        existing = get(conn, job_id)
        raise JobAlreadyFinished(job_id, existing.status if existing is not None else None)
    return job


def mark_failed(
    conn: psycopg.Connection[Any], job_id: UUID, error: str, *, code: str | None = None
) -> Job | None:
    """Record a failed attempt of a running job (to be retried); None if it is not running.

    ``code`` and ``error`` are what clients see: a stable code, a short message without
    exception text.
    """
    params = {"id": job_id, "error": error[:MAX_ERROR_LENGTH], "code": code}
    return _one(conn, _FAIL, params)


def mark_dead(
    conn: psycopg.Connection[Any],
    job_id: UUID,
    error: str | None = None,
    *,
    code: str | None = None,
) -> Job | None:
    """Give up on the job (final error, attempts spent, message in the DLQ); None if finished.

    ``code`` and ``error`` as for :func:`mark_failed`; when None the previous ones stay.
    """
    message = None if error is None else error[:MAX_ERROR_LENGTH]
    return _one(conn, _KILL, {"id": job_id, "error": message, "code": code})


def claim_unsent(
    conn: psycopg.Connection[Any],
    *,
    claim_for: timedelta,
    older_than: timedelta = timedelta(0),
    limit: int = 100,
) -> list[JobMessage]:
    """Claim up to ``limit`` queued jobs whose message was never sent; their messages.

    Commit before sending: the claim keeps other relays off these jobs for ``claim_for`` (longer
    than a send may take) without a row lock held across the network call. A claim that runs out
    (the relay died) makes the job claimable again. ``older_than`` skips jobs changed more
    recently (the sweep leaves the relays their turn).
    """
    params = {"claim_for": claim_for, "age": older_than, "limit": limit}
    with conn.cursor(row_factory=class_row(JobMessage)) as cursor:
        return cursor.execute(_CLAIM, params).fetchall()


def mark_enqueued(conn: psycopg.Connection[Any], job_ids: Sequence[UUID]) -> list[Job]:
    """Record that these jobs' messages were sent; the jobs marked (not those marked already)."""
    return _all(conn, _ENQUEUED, {"ids": list(job_ids)})


def release_claims(conn: psycopg.Connection[Any], job_ids: Sequence[UUID]) -> int:
    """Give up the claims of jobs whose send failed, so the next relay pass tries them again."""
    return conn.execute(_RELEASE, {"ids": list(job_ids)}).rowcount


def resend_lost(
    conn: psycopg.Connection[Any], *, older_than: timedelta, limit: int = 100
) -> list[Job]:
    """Send again the jobs whose message SQS cannot still hold; the jobs, back in the outbox.

    A job ``queued`` or ``failed`` with its message sent but unchanged for ``older_than`` (the
    queue's visibility timeout x maxReceiveCount plus the retries' backoff, or its retention if
    shorter) has no message left: it expired, or went to the dead-letter queue and was read from
    there. Its ``enqueued_at`` goes back to NULL, so the outbox sends it (the trigger wakes the
    relays); a job whose message did go to the DLQ is marked dead by the DLQ's reconciliation.
    """
    return _all(conn, _LOST, {"age": older_than, "limit": limit})


def redrive_dead(
    conn: psycopg.Connection[Any],
    *,
    job_ids: Sequence[UUID] | None = None,
    job_type: str | None = None,
    dead_since: datetime | None = None,
    limit: int = 100,
) -> list[Job]:
    """Put dead jobs back: ``queued``, attempts reset, message unsent (the outbox sends it).

    Only dead jobs matching every filter given (an id in ``job_ids``, of ``job_type``, dead at or
    after ``dead_since``), at most ``limit``; at least one filter is required, so a typo cannot
    redrive every dead job. The last error stays on the row until the job runs again.
    """
    conditions: list[sql.Composable] = [sql.SQL("status = 'dead'")]
    params: dict[str, Any] = {"limit": limit}
    if job_ids is not None:
        conditions.append(sql.SQL("id = ANY(%(ids)s)"))
        params["ids"] = list(job_ids)
    if job_type is not None:
        conditions.append(sql.SQL("type = %(type)s"))
        params["type"] = job_type
    if dead_since is not None:
        conditions.append(sql.SQL("finished_at >= %(since)s"))
        params["since"] = dead_since
    if len(conditions) == 1:
        raise ValueError("redrive_dead needs job ids, a job type or a time to choose the jobs")
    query = sql.Composed(
        [
            sql.SQL("WITH chosen AS (SELECT id AS chosen_id FROM jobs WHERE "),
            sql.SQL(" AND ").join(conditions),
            _query(
                " ORDER BY finished_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
                "UPDATE jobs SET status = 'queued', attempts = 0, result = NULL, "
                "started_at = NULL, finished_at = NULL, enqueued_at = NULL, "
                "send_claimed_until = NULL, updated_at = clock_timestamp() "
                "FROM chosen WHERE jobs.id = chosen.chosen_id RETURNING {columns}"
            ),
        ]
    )
    return _all(conn, query, params)


def requeue_stuck(
    conn: psycopg.Connection[Any], *, max_attempts: Mapping[str, int], limit: int = 100
) -> list[Job]:
    """Put ``running`` jobs whose lease expired back to ``queued`` (for the outbox to resend).

    An expired lease means no worker renewed it: the worker died or lost the database for longer
    than the lease. A job that runs long but is renewed is never taken. Jobs that already had
    their type's ``max_attempts`` (by type name; ``jobs.types.JOB_TYPES.max_attempts()``) are
    marked ``dead`` instead. Rows locked by a live transaction are skipped.
    Returns the jobs changed, in their new state (``error_code`` ``lease_expired``).
    """
    params = {"max_attempts": Jsonb(dict(max_attempts)), "limit": limit}
    return _all(conn, _REQUEUE, params)


def purge_finished(
    conn: psycopg.Connection[Any], *, older_than: timedelta, limit: int = 1000
) -> int:
    """Delete up to ``limit`` succeeded or dead jobs finished before ``older_than``; the count.

    Bounded so one transaction stays short: call again while it returns ``limit``.
    """
    return conn.execute(_PURGE, {"age": older_than, "limit": limit}).rowcount
