"""From an SQS message to a finished job: the worker's handler for the consumer runtime.

For each message (see :mod:`jobs.repository` for the statuses):

1. ``repository.start`` in its own transaction: the job is ``running`` and its attempt counted,
   visibly, while the handler runs. ``None`` means the job already finished (``succeeded`` or
   ``dead``) or does not exist: the message is acknowledged and the handler does not run again.
2. The handler runs outside any transaction, so a long job holds no connection.
3. Success: one transaction writes the effect row and marks the job ``succeeded``. If a duplicate
   delivery got there first, ``mark_succeeded`` raises and the transaction, effect included, is
   rolled back: the effect happens exactly once.
4. Failure: the job is marked ``failed`` (or ``dead`` on the queue's last attempt) and the error
   is raised again, so the consumer makes the message visible after a backoff; SQS moves it to
   the dead-letter queue once maxReceiveCount is reached.

A worker killed between steps 1 and 3 leaves the job ``running``; the message comes back after its
visibility timeout and step 1 counts a new attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from uuid import UUID

from psycopg.types.json import Jsonb

from jobs import repository
from servicekit.consumer import Delivery, Poison
from servicekit.db import Database
from servicekit.logging import log_context
from servicekit.tracing import tracer
from worker.handlers import HANDLERS, Handler

__all__ = ["JobProcessor"]

logger = logging.getLogger(__name__)

_RECORD_EFFECT = "INSERT INTO job_effects (job_id, type, result) VALUES (%s, %s, %s)"


class UnknownJobType(Exception):
    """No handler for the job's type here (a newer worker may know it: retried, not dropped)."""


class JobProcessor:
    """The consumer's handler (``__call__``) and poison hook (:meth:`on_poison`) for jobs."""

    def __init__(self, database: Database, handlers: Mapping[str, Handler] = HANDLERS) -> None:
        self.database = database
        self.handlers = handlers
        self._tracer = tracer(__name__)

    def __call__(self, delivery: Delivery[repository.JobMessage]) -> None:
        job_id = delivery.body.job_id
        with log_context(job_id=str(job_id)):
            with self.database.connection() as conn:
                job = repository.start(conn, job_id)
            if job is None:
                logger.info("job %s is finished or unknown: message acknowledged", job_id)
                return
            with self._tracer.start_as_current_span(f"job {job.type}") as span:
                span.set_attribute("job.id", str(job_id))
                span.set_attribute("job.attempt", job.attempts)
                try:
                    handler = self.handlers.get(job.type)
                    if handler is None:
                        raise UnknownJobType(f"no handler for job type {job.type!r}")
                    result = handler(job.payload)
                except Exception as error:
                    self._record_failure(job_id, delivery, error)
                    raise
                self._record_success(job_id, job.type, result)

    def _record_success(self, job_id: UUID, job_type: str, result: dict[str, object]) -> None:
        try:
            with self.database.connection() as conn:
                conn.execute(_RECORD_EFFECT, (job_id, job_type, Jsonb(result)))
                repository.mark_succeeded(conn, job_id, result)
        except repository.JobAlreadyFinished as finished:
            logger.info("job %s: another delivery finished it first (%s)", job_id, finished)
            return
        logger.info("job %s succeeded", job_id)

    def _record_failure(
        self, job_id: UUID, delivery: Delivery[repository.JobMessage], error: Exception
    ) -> None:
        reason = f"{type(error).__name__}: {error}"
        try:
            with self.database.connection() as conn:
                if delivery.last_attempt:
                    repository.mark_dead(conn, job_id, reason)
                else:
                    repository.mark_failed(conn, job_id, reason)
        except Exception:
            # The message is retried either way; the status catches up on a later attempt.
            logger.exception("job %s: could not record the failure", job_id)
        if delivery.last_attempt:
            logger.error("job %s is dead after %d attempts", job_id, delivery.receive_count)

    def on_poison(self, poison: Poison) -> None:
        """Mark the job dead if the unusable body still names one."""
        job_id = repository.JobMessage.job_id_in(poison.body)
        if job_id is None:
            return
        with self.database.connection() as conn:
            repository.mark_dead(conn, job_id, f"poison message: {poison.reason}")
        logger.error("job %s is dead: its message was poison", job_id)
