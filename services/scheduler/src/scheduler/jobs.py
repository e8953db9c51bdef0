"""The scheduler's jobs, and the registry the infrastructure turns into EventBridge schedules.

- ``outbox-sweep``: the API commits a job and its outbox relay sends the SQS message. The sweep is
  the backstop (no API task running, a relay that missed its NOTIFY): the relay's own code
  (:class:`jobs.outbox.Outbox`) on jobs unsent for ``outbox_min_age``.
- ``resend-lost``: a job sent but neither finished nor changed for longer than SQS can keep its
  message (the queue's visibility timeout x maxReceiveCount plus the retries' backoff, or the
  retention if shorter) has lost its message: back to the outbox.
- ``reconcile-dlq``: each message on the queue's dead-letter queue marks its job ``dead`` with
  the reason (the poison reason, or the attempts it exhausted), then is deleted. ``scheduler
  redrive-dead`` puts chosen dead jobs back.
- ``requeue-stuck``: ``running`` jobs whose lease expired (their worker died or lost the database
  for longer than the lease; a live worker renews it on every heartbeat, however long the job
  runs) go back to ``queued`` for the sweep to resend, or to ``dead`` once their type's
  ``max_attempts`` (``jobs.types``) are spent.
- ``purge-finished``: finished jobs and run history older than ``retention_days``.

Each works in bounded batches and checks its context between them, so a timeout or a SIGTERM
stops it after the batch in hand; a batch is one transaction, so nothing is left half done.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from jobs import repository
from jobs.outbox import Outbox
from jobs.types import JOB_TYPES
from servicekit import aws
from servicekit.consumer import POISON_REASON_ATTRIBUTE
from servicekit.scheduling import JobContext, JobRegistry, RunStore

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageTypeDef

    from scheduler.settings import Settings
    from servicekit.db import Database

__all__ = ["OutboxSendFailed", "QueueSettings", "Resources", "registry"]

logger = logging.getLogger(__name__)

OUTBOX_BATCH = 100
REQUEUE_BATCH = 100
PURGE_BATCH = 1000
SQS_BATCH = 10  # ReceiveMessage's and DeleteMessageBatch's limit
# How long a dead-letter message read by a reconciliation stays hidden from the next one.
DLQ_VISIBILITY = 120


@dataclass(frozen=True)
class Resources:
    """What every job gets as ``context.deps``."""

    settings: Settings
    database: Database
    runs: RunStore


registry: JobRegistry[Resources] = JobRegistry()


class OutboxSendFailed(RuntimeError):
    """Some messages could not be sent; their jobs stay pending for the next sweep."""


def _in_batches(check: Callable[[], None], batch: Callable[[], int], size: int) -> int:
    """Call ``batch`` until it handles fewer than ``size`` rows; the total handled. ``check``
    runs before each batch (a job's :meth:`JobContext.check`: a timeout or SIGTERM stops it)."""
    total = 0
    while True:
        check()
        handled = batch()
        total += handled
        if handled < size:
            return total


@registry.job("outbox-sweep", schedule="rate(1 minute)", timeout=50)
def outbox_sweep(context: JobContext[Resources]) -> None:
    """Send the SQS message of queued jobs the API's outbox relays left unsent."""
    settings = context.deps.settings
    outbox = Outbox(context.deps.database, settings.queue_url)
    sent = 0

    def send_batch() -> int:
        nonlocal sent
        outcome = outbox.send_pending(
            limit=OUTBOX_BATCH, older_than=timedelta(seconds=settings.outbox_min_age)
        )
        sent += len(outcome.enqueued)
        # Raised after the jobs that did go out were marked sent.
        if outcome.problems:
            raise OutboxSendFailed(
                f"{len(outcome.problems)} send(s) failed: {'; '.join(outcome.problems[:5])}"
            )
        return outcome.claimed

    _in_batches(context.check, send_batch, OUTBOX_BATCH)
    logger.info("outbox sweep: %d message(s) sent", sent, extra={"sent": sent})


@dataclass(frozen=True)
class QueueSettings:
    """What the jobs queue's attributes say about how long a message can live, and its DLQ."""

    visibility_timeout: int
    retention: int
    max_receive_count: int | None
    dead_letter_queue_url: str | None

    @classmethod
    def read(cls, queue_url: str) -> QueueSettings:
        sqs = aws.client("sqs")
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["VisibilityTimeout", "MessageRetentionPeriod", "RedrivePolicy"],
        )["Attributes"]
        redrive = json.loads(attributes.get("RedrivePolicy", "{}"))
        dlq_url = None
        if "deadLetterTargetArn" in redrive:
            # arn:aws:sqs:{region}:{account}:{name}
            *_, account, name = str(redrive["deadLetterTargetArn"]).split(":")
            dlq_url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        return cls(
            visibility_timeout=int(attributes["VisibilityTimeout"]),
            retention=int(attributes["MessageRetentionPeriod"]),
            max_receive_count=int(redrive["maxReceiveCount"]) if redrive else None,
            dead_letter_queue_url=dlq_url,
        )

    def message_lifetime(self, retry_margin: float) -> timedelta:
        """The longest a message of a job not finished can still be on the queue.

        Each receive hides it for the visibility timeout (a failed attempt's backoff can be
        longer: ``retry_margin`` covers that); after maxReceiveCount receives it moves to the
        DLQ. Never received, it expires after the retention.
        """
        if self.max_receive_count is None:
            return timedelta(seconds=self.retention)
        redelivered = self.visibility_timeout * self.max_receive_count + retry_margin
        return timedelta(seconds=min(redelivered, self.retention))


@registry.job("resend-lost", schedule="rate(5 minutes)", timeout=120)
def resend_lost(context: JobContext[Resources]) -> None:
    """Send again the jobs whose message cannot be on the queue any more."""
    settings = context.deps.settings
    lifetime = QueueSettings.read(settings.queue_url).message_lifetime(settings.retry_margin)

    def resend_batch() -> int:
        with context.deps.database.connection() as conn:
            resent = repository.resend_lost(conn, older_than=lifetime, limit=REQUEUE_BATCH)
        for job in resent:
            logger.warning(
                "job %s: no message for %s, sending it again", job.id, lifetime,
                extra={"job_id": str(job.id)},
            )  # fmt: skip
        return len(resent)

    resent = _in_batches(context.check, resend_batch, REQUEUE_BATCH)
    logger.info("lost messages: %d job(s) sent again", resent, extra={"resent": resent})


def _dead_letter_reason(message: MessageTypeDef, job: repository.Job | None) -> str:
    poison = message.get("MessageAttributes", {}).get(POISON_REASON_ATTRIBUTE)
    if poison is not None and "StringValue" in poison:
        return f"poison message: {poison['StringValue']}"
    attempts = job.attempts if job is not None else 0
    last = f"; last error: {job.error}" if job is not None and job.error else ""
    return f"exhausted {attempts} attempt(s): its message went to the dead-letter queue{last}"


@registry.job("reconcile-dlq", schedule="rate(5 minutes)", timeout=120)
def reconcile_dlq(context: JobContext[Resources]) -> None:
    """Mark the job of every dead-letter message dead with the reason, then delete the message.

    A body that names no job is left on the DLQ (and logged) for a person to look at.
    """
    reconcile_dead_letters(context.deps.settings, context.deps.database, context.check)


def reconcile_dead_letters(
    settings: Settings, database: Database, check: Callable[[], None] = lambda: None
) -> int:
    """What ``reconcile-dlq`` does (``scheduler redrive-dead`` does it first, so a job whose
    message still waits on the DLQ can be chosen); the number of jobs marked dead."""
    dlq_url = QueueSettings.read(settings.queue_url).dead_letter_queue_url
    if dlq_url is None:
        logger.warning("the jobs queue has no dead-letter queue: nothing to reconcile")
        return 0
    sqs = aws.client("sqs")
    dead = 0

    def reconcile_batch() -> int:
        nonlocal dead
        messages = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=SQS_BATCH,
            WaitTimeSeconds=0,
            VisibilityTimeout=DLQ_VISIBILITY,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        handled: list[MessageTypeDef] = []
        with database.connection() as conn:
            for message in messages:
                job_id = repository.JobMessage.job_id_in(message["Body"])
                if job_id is None:
                    logger.error("dead-letter message %s names no job", message["MessageId"])
                    continue
                reason = _dead_letter_reason(message, repository.get(conn, job_id))
                if repository.mark_dead(conn, job_id, reason) is not None:
                    logger.warning("job %s is dead: %s", job_id, reason)
                    dead += 1
                handled.append(message)
        # Deleted after the commit: a crash in between only reads them again next time.
        if handled:
            sqs.delete_message_batch(
                QueueUrl=dlq_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                    for index, message in enumerate(handled)
                ],
            )
        return len(messages)

    # Short polling samples a subset of SQS's servers: read until a receive comes back empty.
    _in_batches(check, reconcile_batch, 1)
    logger.info("dead-letter queue: %d job(s) marked dead", dead, extra={"dead": dead})
    return dead


@registry.job("requeue-stuck", schedule="rate(5 minutes)", timeout=120)
def requeue_stuck(context: JobContext[Resources]) -> None:
    """Put running jobs whose lease expired back to queued (or dead after max attempts)."""
    requeued = dead = 0

    def requeue_batch() -> int:
        nonlocal requeued, dead
        with context.deps.database.connection() as conn:
            changed = repository.requeue_stuck(
                conn, max_attempts=JOB_TYPES.max_attempts(), limit=REQUEUE_BATCH
            )
        for job in changed:
            logger.warning("job %s: its lease expired, now %s", job.id, job.status.value)
            if job.status is repository.JobStatus.DEAD:
                dead += 1
            else:
                requeued += 1
        return len(changed)

    _in_batches(context.check, requeue_batch, REQUEUE_BATCH)
    logger.info("stuck jobs: %d requeued, %d dead", requeued, dead)


@registry.job("purge-finished", schedule="cron(30 3 * * ? *)", timeout=600)
def purge_finished(context: JobContext[Resources]) -> None:
    """Delete finished jobs and scheduler run history older than the retention."""
    retention = timedelta(days=context.deps.settings.retention_days)

    def purge_batch() -> int:
        with context.deps.database.connection() as conn:
            return repository.purge_finished(conn, older_than=retention, limit=PURGE_BATCH)

    purged = _in_batches(context.check, purge_batch, PURGE_BATCH)
    runs = context.deps.runs.purge(retention)
    logger.info("purged %d job(s) and %d run record(s)", purged, runs)
