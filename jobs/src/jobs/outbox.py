"""The transactional outbox: jobs committed without their SQS message get it from here.

A request only commits the job; a trigger NOTIFYs ``jobs_outbox``. :class:`Relay` (a thread in
each API worker; one per task sends at a time) LISTENs and calls :meth:`Outbox.send_pending`,
which is also what the scheduler's ``outbox-sweep`` runs as a backstop: one implementation of
claim, commit, send, mark.

1. Claim up to ``batch`` unsent jobs (``send_claimed_until`` = now + ``claim_for``) and commit:
   no row lock is held while SQS is called, and other relays skip the claimed jobs.
2. Send them with SendMessageBatch (10 per call) through a client with its own short
   :data:`SEND_BUDGET`, so a relay notices an unreachable SQS in seconds.
3. Mark the sent ones enqueued (``RETURNING`` the jobs); release the claims of those that failed,
   so the next pass tries them again. If the process dies between 2 and 3 the claim runs out and
   the job is sent again: a duplicate message, which the worker ignores once the job finished.

IAM: ``sqs:SendMessage`` on the queue (SendMessageBatch is authorised as SendMessage).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
from botocore.exceptions import BotoCoreError, ClientError

from jobs import repository
from servicekit import aws
from servicekit.errors import DependencyUnavailable

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

    from servicekit.db import Database

__all__ = ["CHANNEL", "RELAY_LOCK_CLASS", "SEND_BUDGET", "Outbox", "Relay", "Sent"]

CHANNEL = "jobs_outbox"  # what the 0005_outbox_relay trigger NOTIFYs
# The first key of the relays' pg_try_advisory_lock(int, int): the two-key space, apart from the
# migrations' single-key lock; the second key is the relay's ``lead_key``.
RELAY_LOCK_CLASS = 0x6A6F6273  # "jobs"
SQS_BATCH = 10  # SendMessageBatch's limit
SEND_BUDGET = aws.Budget(connect_timeout=1.0, read_timeout=3.0, max_attempts=2)
"""At most about 8 s per SendMessageBatch while SQS does not answer: well within a claim."""
STOP_CHECK = 0.1
"""How often a listening relay looks up from its LISTEN to see whether it should stop: a worker
shutting down (SIGTERM, or a test's app leaving its lifespan) waits at most this for it."""

_log = logging.getLogger(__name__)


@dataclass
class Sent:
    """What one :meth:`Outbox.send_pending` did: jobs claimed, marked enqueued, and failures."""

    claimed: int = 0
    enqueued: list[repository.Job] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class Outbox:
    """Claim, commit, send, mark: the one way a job's message goes out."""

    def __init__(
        self,
        database: Database,
        queue_url: str,
        *,
        claim_for: timedelta = timedelta(seconds=30),
    ) -> None:
        self.database = database
        self.queue_url = queue_url
        self.claim_for = claim_for

    def send_pending(self, *, limit: int = 100, older_than: timedelta = timedelta(0)) -> Sent:
        """Send up to ``limit`` unsent jobs' messages; raises ``DependencyUnavailable`` (database).

        SQS failures do not raise: they are in :attr:`Sent.problems` and their jobs stay unsent.
        """
        with self.database.connection() as conn:
            claimed = repository.claim_unsent(
                conn, claim_for=self.claim_for, older_than=older_than, limit=limit
            )
        outcome = Sent(claimed=len(claimed))
        if not claimed:
            return outcome
        sent, failed = self._send(claimed, outcome.problems)
        with self.database.connection() as conn:
            outcome.enqueued = repository.mark_enqueued(conn, sent)
            if failed:
                repository.release_claims(conn, failed)
        return outcome

    def _send(
        self, messages: list[repository.JobMessage], problems: list[str]
    ) -> tuple[list[UUID], list[UUID]]:
        sqs = aws.client("sqs", budget=SEND_BUDGET)
        sent: list[UUID] = []
        failed: list[UUID] = []
        for start in range(0, len(messages), SQS_BATCH):
            chunk = messages[start : start + SQS_BATCH]
            entries: list[SendMessageBatchRequestEntryTypeDef] = [
                {"Id": str(index), "MessageBody": message.model_dump_json()}
                for index, message in enumerate(chunk)
            ]
            try:
                response = sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except (BotoCoreError, ClientError) as error:
                problems.append(aws.describe_error(error, service="sqs", resource=self.queue_url))
                # SQS is down or refuses: the rest waits for the next pass.
                failed.extend(message.job_id for message in messages[start:])
                break
            sent.extend(chunk[int(entry["Id"])].job_id for entry in response.get("Successful", []))
            for entry in response.get("Failed", []):
                failed.append(chunk[int(entry["Id"])].job_id)
                problems.append(f"{chunk[int(entry['Id'])].job_id}: {entry['Code']}")
        return sent, failed


class Relay:
    """A daemon thread that sends the outbox as jobs arrive: LISTEN, with a fallback poll.

    Woken by every NOTIFY on :data:`CHANNEL` (and every ``poll_interval`` seconds, in case a
    notification was missed while its connection was down), it sends until the outbox is empty.
    After a failure (SQS or the database) it waits ``min(max_backoff, 0.5 x 2^n)`` seconds with
    jitter, so many relays do not hammer a dependency that is down; no row is lost meanwhile.
    Safe with any number of relays in any number of tasks: claims keep them apart.

    Relays given the same ``lead_key`` take turns: only the one holding the PostgreSQL advisory
    lock on that key (on its LISTEN connection, so it is released when the process or the
    connection dies) listens and sends; the others stand by and try the lock every
    ``poll_interval``. An API task's workers share one key, so a NOTIFY wakes one relay per task
    rather than every worker, each running a claim that all but one find empty.
    """

    def __init__(
        self,
        outbox: Outbox,
        listen: Callable[[], psycopg.Connection[Any]],
        *,
        batch: int = 100,
        poll_interval: float = 5.0,
        max_backoff: float = 15.0,
        lead_key: int | None = None,
    ) -> None:
        self.outbox = outbox
        self._listen = listen
        self.batch = batch
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.lead_key = lead_key
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self._conn: psycopg.Connection[Any] | None = None
        self._leading = False
        self._failures = 0

    @property
    def leading(self) -> bool:
        """Whether this relay listens and sends now (a relay without ``lead_key`` always does)."""
        return self._leading

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the pass in hand (a send is bounded by :data:`SEND_BUDGET`)."""
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._connect()
                if self.lead_key is not None and not self._leading:
                    self._stop.wait(self.poll_interval)  # standing by
                    continue
                if self._pass():
                    continue  # a full batch: there may be more
                if self._failures:
                    delay = min(self.max_backoff, 0.5 * 2 ** (self._failures - 1))
                    self._stop.wait(delay * (0.5 + random.random() / 2))  # noqa: S311 - jitter
                else:
                    self._wait()
        finally:
            self._disconnect()

    def _pass(self) -> bool:
        """One send; True when a full batch went out (send again at once)."""
        try:
            outcome = self.outbox.send_pending(limit=self.batch)
        except (DependencyUnavailable, psycopg.Error) as error:
            self._failed(f"database: {error}")
            return False
        except Exception:
            # A bug must not end the thread: the jobs would wait for the sweep alone.
            _log.exception("outbox relay: pass failed")
            self._failures += 1
            return False
        if outcome.problems:
            self._failed("; ".join(outcome.problems[:3]))
            return False
        if self._failures:
            _log.info("outbox relay: sending again after %d failed pass(es)", self._failures)
            self._failures = 0
        return outcome.claimed == self.batch

    def _failed(self, reason: str) -> None:
        # The first failure of a run of them is a warning; the rest would only repeat it.
        if not self._failures:
            _log.warning("outbox relay: messages not sent, retrying with backoff: %s", reason)
        self._failures += 1

    def _connect(self) -> None:
        """Open the LISTEN connection when there is none; LISTEN once this relay leads."""
        if self._conn is None or self._conn.closed:
            self._disconnect()
            try:
                self._conn = self._listen()
                self._conn.autocommit = True
            except (DependencyUnavailable, psycopg.Error) as error:
                _log.debug("outbox relay: no LISTEN connection, polling: %s", error)
                return
        if self._leading:
            return
        try:
            if self._lead(self._conn):
                self._conn.execute(f"LISTEN {CHANNEL}")
                self._leading = True
        except psycopg.Error as error:
            _log.debug("outbox relay: LISTEN connection lost: %s", error)
            self._disconnect()

    def _lead(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether this relay is the one to send for its ``lead_key`` (always, without one)."""
        if self.lead_key is None:
            return True
        row = conn.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (RELAY_LOCK_CLASS, self.lead_key)
        ).fetchone()
        return bool(row and row[0])

    def _disconnect(self) -> None:
        self._leading = False
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _wait(self) -> None:
        """Until a notification, ``poll_interval`` or stop (looked at every :data:`STOP_CHECK`)."""
        deadline = time.monotonic() + self.poll_interval
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._conn is None:
                self._stop.wait(left)
                return
            try:
                if any(
                    True for _ in self._conn.notifies(timeout=min(left, STOP_CHECK), stop_after=1)
                ):
                    return
            except psycopg.Error:
                self._disconnect()
                return
