"""The scheduler's jobs, and the registry the infrastructure turns into EventBridge schedules.

- ``outbox-sweep``: the API commits a job, then sends its SQS message; when that send failed the
  row stays ``queued`` with ``enqueued_at`` NULL. The sweep sends those messages (the same body
  the API sends) and marks them enqueued.
- ``requeue-stuck``: ``running`` jobs whose lease expired (their worker died or lost the database
  for longer than the lease; a live worker renews it on every heartbeat, however long the job
  runs) go back to ``queued`` for the sweep to resend, or to ``dead`` once their type's
  ``max_attempts`` (``jobs.types``) are spent.
- ``purge-finished``: finished jobs and run history older than ``retention_days``.

Each works in bounded batches and checks its context between them, so a timeout or a SIGTERM
stops it after the batch in hand; a batch is one transaction, so nothing is left half done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from jobs import repository
from jobs.types import JOB_TYPES
from servicekit import aws
from servicekit.scheduling import JobContext, JobRegistry, RunStore

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

    from scheduler.settings import Settings
    from servicekit.db import Database

__all__ = ["OutboxSendFailed", "Resources", "registry"]

logger = logging.getLogger(__name__)

OUTBOX_BATCH = 100
REQUEUE_BATCH = 100
PURGE_BATCH = 1000
SQS_BATCH = 10  # SendMessageBatch's limit


@dataclass(frozen=True)
class Resources:
    """What every job gets as ``context.deps``."""

    settings: Settings
    database: Database
    runs: RunStore


registry: JobRegistry[Resources] = JobRegistry()


class OutboxSendFailed(RuntimeError):
    """Some messages could not be sent; their jobs stay pending for the next sweep."""


def _in_batches(context: JobContext[Resources], batch: Callable[[], int], size: int) -> int:
    """Call ``batch`` until it handles fewer than ``size`` rows; the total handled."""
    total = 0
    while True:
        context.check()
        handled = batch()
        total += handled
        if handled < size:
            return total


@registry.job("outbox-sweep", schedule="rate(1 minute)", timeout=50)
def outbox_sweep(context: JobContext[Resources]) -> None:
    """Send the SQS message of queued jobs whose send failed at the API (the outbox)."""
    settings = context.deps.settings

    def send_batch() -> int:
        problems: list[str] = []
        with context.deps.database.connection() as conn:
            pending = repository.pending_enqueue(
                conn, older_than=timedelta(seconds=settings.outbox_min_age), limit=OUTBOX_BATCH
            )
            for start in range(0, len(pending), SQS_BATCH):
                chunk = pending[start : start + SQS_BATCH]
                entries: list[SendMessageBatchRequestEntryTypeDef] = [
                    {"Id": str(index), "MessageBody": repository.message_body(job)}
                    for index, job in enumerate(chunk)
                ]
                try:
                    response = aws.client("sqs").send_message_batch(
                        QueueUrl=settings.queue_url, Entries=entries
                    )
                except (BotoCoreError, ClientError) as error:
                    problems.append(
                        aws.describe_error(error, service="sqs", resource=settings.queue_url)
                    )
                    break  # SQS is down or refuses: the rest waits for the next sweep
                for entry in response.get("Successful", []):
                    repository.mark_enqueued(conn, chunk[int(entry["Id"])].id)
                problems.extend(
                    f"{chunk[int(entry['Id'])].id}: {entry['Code']}"
                    for entry in response.get("Failed", [])
                )
        # Raised after the commit: the messages that did go out stay marked as sent.
        if problems:
            raise OutboxSendFailed(f"{len(problems)} send(s) failed: {'; '.join(problems[:5])}")
        return len(pending)

    sent = _in_batches(context, send_batch, OUTBOX_BATCH)
    logger.info("outbox sweep: %d message(s) sent", sent, extra={"sent": sent})


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

    _in_batches(context, requeue_batch, REQUEUE_BATCH)
    logger.info("stuck jobs: %d requeued, %d dead", requeued, dead)


@registry.job("purge-finished", schedule="cron(30 3 * * ? *)", timeout=600)
def purge_finished(context: JobContext[Resources]) -> None:
    """Delete finished jobs and scheduler run history older than the retention."""
    retention = timedelta(days=context.deps.settings.retention_days)

    def purge_batch() -> int:
        with context.deps.database.connection() as conn:
            return repository.purge_finished(conn, older_than=retention, limit=PURGE_BATCH)

    purged = _in_batches(context, purge_batch, PURGE_BATCH)
    runs = context.deps.runs.purge(retention)
    logger.info("purged %d job(s) and %d run record(s)", purged, runs)
