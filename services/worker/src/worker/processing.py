"""From an SQS message to a finished job: the worker's handler for the consumer runtime.

For each message (see :mod:`jobs.repository` for the statuses, :mod:`jobs.types` for the
contract each job type declares):

1. ``repository.start`` in its own transaction: the job is ``running``, its attempt counted and
   its lease set, visibly, while the handler runs. ``None`` means the job already finished
   (``succeeded`` or ``dead``) or does not exist: the message is acknowledged.
2. The payload is validated into its type's model and the handler runs outside any transaction
   (a long job holds no connection), with a :class:`jobs.types.JobRun` carrying its deadline.
   On every consumer heartbeat :meth:`JobProcessor.working` renews the leases of every job held,
   in one UPDATE.
3. Success: one transaction writes the effect row and marks the job ``succeeded``. If a duplicate
   delivery got there first, ``mark_succeeded`` raises and the transaction, effect included, is
   rolled back: the effect happens exactly once.
4. Failure: the job is marked ``failed`` with a code and a message for clients (the exception
   itself goes to the log only) and the consumer retries the message after its backoff. A final
   failure (not retryable, or the type's ``max_attempts`` spent) marks it ``dead`` and deletes
   the message (:class:`servicekit.consumer.GiveUp`): SQS does not deliver it again.
5. Timeout: a handler is told at its deadline (``JobRun.cancelled``; ``JobRun.wait`` raises). One
   still running a heartbeat later is disowned: its job is marked failed (or dead) ``timeout``,
   its lease no longer renewed and its message left to come back after the visibility timeout;
   its thread cannot be killed and holds its slot until it returns, its result then ignored.

The database being unavailable (``DependencyUnavailable`` from this module's own calls) is not
the job's failure: it propagates, the consumer hands the message back without counting a failure
and, through its readiness gate, takes no more until the database answers again.

A worker killed between steps 1 and 3 leaves the job ``running``: its lease runs out and the
scheduler's ``requeue-stuck`` queues it again; or its message comes back first and step 1 counts
a new attempt.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg.types.json import Jsonb

from jobs import repository
from jobs.types import JOB_TYPES, Failure, JobRun, JobTimeout, JobType, JobTypes
from servicekit.consumer import Delivery, GiveUp, Poison
from servicekit.db import Database
from servicekit.errors import DependencyUnavailable
from servicekit.logging import log_context
from servicekit.tracing import tracer

__all__ = ["AttemptFailed", "JobProcessor"]

logger = logging.getLogger(__name__)

_RECORD_EFFECT = "INSERT INTO job_effects (job_id, type, result) VALUES (%s, %s, %s)"
# A newer API may accept a type this worker does not know yet (a deploy in progress): retried.
_UNKNOWN_TYPE = Failure("unknown_job_type", "no worker can run this job type yet", True)


class AttemptFailed(Exception):
    """This attempt failed and was recorded; the consumer retries the message after a backoff."""


@dataclass
class _Running:
    job: repository.Job
    job_type: JobType
    run: JobRun
    last_delivery: bool  # SQS redrives the message to the DLQ if this attempt is given up
    told: bool = False  # cancelled at a heartbeat past the deadline


class JobProcessor:
    """The consumer's handler (``__call__``), heartbeat hook (:meth:`working`), poison hook."""

    def __init__(
        self, database: Database, *, lease: timedelta, types: JobTypes = JOB_TYPES
    ) -> None:
        self.database = database
        self.lease = lease
        self.types = types
        self._tracer = tracer(__name__)
        self._lock = threading.Lock()
        self._running: dict[str, _Running] = {}  # by message id

    def __call__(self, delivery: Delivery[repository.JobMessage]) -> None:
        job_id = delivery.body.job_id
        with log_context(job_id=str(job_id)):
            with self.database.connection() as conn:
                job = repository.start(conn, job_id, lease=self.lease)
            if job is None:
                logger.info("job %s is finished or unknown: message acknowledged", job_id)
                return
            job_type = self.types.get(job.type)
            if job_type is None:
                logger.error("job %s: no job type %r in this worker", job_id, job.type)
                self._record_failure(job, delivery.max_receive_count, delivery, _UNKNOWN_TYPE)
                return
            outcome = self._run(job, job_type, delivery)
            if isinstance(outcome, Failure):
                self._record_failure(job, job_type.max_attempts, delivery, outcome)
            elif outcome is not None:
                self._record_success(job, outcome)

    def _run(
        self, job: repository.Job, job_type: JobType, delivery: Delivery[repository.JobMessage]
    ) -> Mapping[str, Any] | Failure | None:
        """The handler's result or failure; None if the heartbeat timed it out meanwhile."""
        run = JobRun(job.id, job.attempts, job_type.timeout)
        with self._lock:
            self._running[delivery.message_id] = _Running(job, job_type, run, delivery.last_attempt)
        outcome: Mapping[str, Any] | Failure
        try:
            with self._tracer.start_as_current_span(f"job {job.type}") as span:
                span.set_attribute("job.id", str(job.id))
                span.set_attribute("job.attempt", job.attempts)
                try:
                    result = job_type.resolve()(job_type.payload.model_validate(job.payload), run)
                    run.check()  # a result that came after the deadline does not count
                    outcome = result
                except Exception as error:
                    outcome = job_type.failure(error)
                    # The detail (exception text, traceback) is for the logs only.
                    logger.exception(
                        "job %s attempt %d failed: %s", job.id, job.attempts, outcome.code
                    )
        finally:
            with self._lock:
                mine = self._running.pop(delivery.message_id, None) is not None
        if not mine:
            logger.warning("job %s: handler returned after its timeout; result ignored", job.id)
            return None
        return outcome

    def _record_success(self, job: repository.Job, result: Mapping[str, Any]) -> None:
        try:
            with self.database.connection() as conn:
                conn.execute(_RECORD_EFFECT, (job.id, job.type, Jsonb(dict(result))))
                repository.mark_succeeded(conn, job.id, result)
        except repository.JobAlreadyFinished as finished:
            logger.info("job %s: another delivery finished it first (%s)", job.id, finished)
            return
        logger.info("job %s succeeded", job.id)

    def _record_failure(
        self,
        job: repository.Job,
        max_attempts: int,
        delivery: Delivery[repository.JobMessage],
        failure: Failure,
    ) -> None:
        """Mark the job failed (and raise for a retry) or dead (and raise :class:`GiveUp`)."""
        final = self._store_failure(job, max_attempts, failure, last_delivery=delivery.last_attempt)
        if final:
            raise GiveUp(f"job {job.id} is dead: {failure.code}")
        raise AttemptFailed(f"job {job.id} attempt {job.attempts} failed: {failure.code}")

    def _store_failure(
        self, job: repository.Job, max_attempts: int, failure: Failure, *, last_delivery: bool
    ) -> bool:
        """Record ``failure`` on the job; True when it is final (the job is dead)."""
        final = not failure.retryable or job.attempts >= max_attempts or last_delivery
        with self.database.connection() as conn:
            if final:
                repository.mark_dead(conn, job.id, failure.public_message, code=failure.code)
            else:
                repository.mark_failed(conn, job.id, failure.public_message, code=failure.code)
        if final:
            logger.error(
                "job %s is dead after %d attempt(s): %s", job.id, job.attempts, failure.code
            )
        return final

    def working(self, deliveries: list[Delivery[repository.JobMessage]]) -> list[str]:
        """The consumer's heartbeat hook: renew held jobs' leases, time out overdue ones.

        Returns the message ids still worked on; a timed-out job's message is left out, so the
        consumer stops extending it.
        """
        keep: list[str] = []
        held: list[_Running] = []
        overdue: list[_Running] = []
        with self._lock:
            for delivery in deliveries:
                running = self._running.get(delivery.message_id)
                if running is not None and running.run.expired and running.told:
                    overdue.append(self._running.pop(delivery.message_id))
                    continue
                keep.append(delivery.message_id)
                if running is not None:
                    held.append(running)
                    if running.run.expired:
                        running.run.cancelled.set()
                        running.told = True
        try:
            with self.database.connection() as conn:
                repository.renew_leases(conn, [r.job.id for r in held], lease=self.lease)
            for running in overdue:
                self._time_out(running)
        except DependencyUnavailable as error:
            # The leases outlast several heartbeats; an overdue job's lease simply runs out.
            logger.warning("could not renew job leases: %s", error)
        return keep

    def _time_out(self, running: _Running) -> None:
        timeout = JobTimeout(f"the job ran past its {running.job_type.timeout:g} s timeout")
        logger.error(
            "job %s ran past its %g s timeout and did not stop: given up (its thread runs on)",
            running.job.id,
            running.job_type.timeout,
        )
        self._store_failure(
            running.job,
            running.job_type.max_attempts,
            running.job_type.failure(timeout),
            last_delivery=running.last_delivery,
        )

    def on_poison(self, poison: Poison) -> None:
        """Mark the job dead if the unusable body still names one."""
        job_id = repository.JobMessage.job_id_in(poison.body)
        if job_id is None:
            return
        with self.database.connection() as conn:
            repository.mark_dead(
                conn, job_id, "the job's queue message could not be read", code="invalid_message"
            )
        logger.error("job %s is dead: its message was poison (%s)", job_id, poison.reason)
