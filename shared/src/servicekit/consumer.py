"""The SQS consumer runtime: a worker service gives it a queue, a pydantic model and a handler.

What it does for every message (see :class:`Consumer`):

- long-polls (20 s by default, up to 10 messages a call) from ``receivers`` threads, only for as
  many messages as there are free in-flight slots;
- validates the body into the model; a body that does not validate is poison: it is sent to the
  dead-letter queue (found from the queue's RedrivePolicy) at once and deleted from the queue,
  never retried;
- runs the handler in a bounded thread pool, extending the message's visibility (a heartbeat)
  while it runs or waits, so a handler may outlive the queue's visibility timeout;
- on success deletes the message in batches of up to 10 (failed entries are retried or logged);
  on an exception makes it visible again after a backoff (:class:`servicekit.retry.Backoff`), so
  SQS's maxReceiveCount redrives it to the dead-letter queue when the attempts are exhausted;
  :class:`GiveUp` means the failure is final: the message is deleted, no more retries;
- ``DependencyUnavailable`` from a handler is not the message's fault: the message goes back to
  the queue after ``defer_delay`` without counting as a failure (no backoff), and while the
  ``ready`` gate says no (e.g. the database is down) nothing more is received;
- ``working``, a hook called on each heartbeat tick with the running deliveries, says which are
  still worked on (the worker renews their job leases there, in one UPDATE); a delivery it
  leaves out is given up: its message is no longer extended and comes back after its
  visibility timeout (a handler past its timeout cannot be killed, only disowned);
- on stop (SIGTERM through :class:`servicekit.lifecycle.Lifecycle`) receives nothing more, makes
  received-but-not-started messages visible again at once, lets running handlers finish within a
  grace period, and returns;
- holds ECS task scale-in protection while messages are in flight (:class:`TaskProtection`) and
  writes EMF metrics (processed, failed, poisoned, handler latency, message age).

Threads rather than asyncio: handlers are ordinary synchronous code (psycopg, boto3, HTTP
clients) and block on I/O, which releases the GIL; a thread pool runs them unchanged, whereas an
event loop would need async handlers or push every handler to a thread anyway. The bound on
in-flight messages keeps the thread count small and fixed.

Delivery is at least once: a handler must be idempotent (the worker service checks the job's
state in the same transaction that records the handler's effect).
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ValidationError

from servicekit import aws
from servicekit.errors import ConfigurationError, DependencyUnavailable
from servicekit.logging import log_context
from servicekit.retry import Backoff

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef, MessageTypeDef

    from servicekit.metrics import Metrics

__all__ = [
    "Consumer",
    "ConsumerStats",
    "Delivery",
    "GiveUp",
    "Poison",
    "TaskProtection",
    "TaskProtectionError",
]

M = TypeVar("M", bound=BaseModel)

logger = logging.getLogger(__name__)

MAX_BATCH = 10  # SQS's limit for ReceiveMessage and every *Batch call
POISON_REASON_ATTRIBUTE = "servicekit.poison_reason"
_BATCH_RETRIES = 3
# The one policy (servicekit.retry) with the consumer's own figures: a *Batch call is retried
# within a heartbeat tick, a failed receive backs off up to half a minute.
_BATCH_BACKOFF = Backoff(base=0.2, cap=1.0)
DEFAULT_RETRY = Backoff(base=5.0, cap=300.0)
_RECEIVE_BACKOFF = Backoff(base=1.0, cap=30.0)
_GATE_INTERVAL = 1.0


class GiveUp(Exception):
    """Raised by a handler (``raise GiveUp(...) from error``): retrying cannot help.

    The consumer counts the failure and deletes the message, so SQS does not deliver it again.
    The handler has recorded the outcome where it belongs (e.g. the job marked dead).
    """


class TaskProtectionError(RuntimeError):
    """The ECS agent refused or did not answer a task-protection request."""


@dataclass(frozen=True)
class Delivery(Generic[M]):
    """One received message, its body validated, as a handler sees it."""

    body: M
    message_id: str
    receive_count: int
    max_receive_count: int
    sent_at: float | None
    """Epoch seconds when the message was sent (SentTimestamp)."""
    message_attributes: Mapping[str, str] = field(default_factory=dict)
    """String message attributes (e.g. a trace header set by the producer)."""

    @property
    def last_attempt(self) -> bool:
        """If this attempt fails, SQS moves the message to the dead-letter queue."""
        return self.receive_count >= self.max_receive_count


@dataclass(frozen=True)
class Poison:
    """A message whose body did not validate: it has been sent to the dead-letter queue."""

    message_id: str
    body: str
    reason: str


@dataclass(frozen=True)
class ConsumerStats:
    in_flight: int
    """Received and not yet settled (running, waiting for a thread, or being released)."""
    running: int
    processed: int
    failed: int
    poisoned: int
    deferred: int
    """Handed back because a dependency was unavailable (not failures)."""
    ready: bool
    """False while the ``ready`` gate holds receives back."""
    seconds_since_loop: float
    """Seconds since a receive loop last went round (liveness)."""


class TaskProtection:
    """ECS task scale-in protection through the ECS agent's endpoint (``$ECS_AGENT_URI``).

    A protected task is not chosen by a service scale-in, so a busy worker is not stopped while
    it holds messages. Protection expires by itself after ``expires_in_minutes`` (the agent's
    safety net if this process dies holding it); the consumer renews it at half that.
    """

    def __init__(
        self,
        agent_uri: str,
        *,
        expires_in_minutes: int = 60,
        release_after: float = 2.0,
        timeout: float = 3.0,
    ) -> None:
        self.url = agent_uri.rstrip("/") + "/task-protection/v1/state"
        self.expires_in_minutes = expires_in_minutes
        self.release_after = release_after
        """Idle seconds before protection is dropped, so a steady stream does not flap it."""
        self.timeout = timeout

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], **options: Any) -> TaskProtection | None:
        """Protection for this task when running on ECS (``ECS_AGENT_URI`` set), else None."""
        uri = environ.get("ECS_AGENT_URI")
        return cls(uri, **options) if uri else None

    def set(self, enabled: bool) -> None:
        """Enable or disable protection; raise :class:`TaskProtectionError` if refused."""
        payload: dict[str, Any] = {"ProtectionEnabled": enabled}
        if enabled:
            payload["ExpiresInMinutes"] = self.expires_in_minutes
        request = urllib.request.Request(  # noqa: S310 - the agent's URI, from ECS itself
            self.url,
            data=json.dumps(payload).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                answer = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            raise TaskProtectionError(
                f"ECS agent answered {error.code} to task protection: {error.read()[:300]!r}"
            ) from error
        except (OSError, ValueError) as error:
            raise TaskProtectionError(
                f"ECS agent unreachable for task protection: {error}"
            ) from error
        # The agent reports a refusal (e.g. the task is already stopping) in a 200 body.
        if "failure" in answer or "error" in answer:
            raise TaskProtectionError(f"ECS agent refused task protection: {answer}")


@dataclass(eq=False)
class _Message:
    """A received message while this process holds it."""

    raw: MessageTypeDef
    visible_until: float  # monotonic; when SQS would make it visible again
    delivery: Delivery[Any] | None = None  # set while its handler runs
    done: bool = False  # the handler returned
    abandoned: bool = False  # given up by the ``working`` hook

    @property
    def receipt(self) -> str:
        return self.raw["ReceiptHandle"]

    @property
    def message_id(self) -> str:
        return self.raw["MessageId"]

    def attribute(self, name: str) -> str | None:
        return self.raw.get("Attributes", {}).get(name)  # type: ignore[call-overload, no-any-return]


class Consumer(Generic[M]):
    """Consume ``queue_url`` with ``handler`` until the stop event passed to :meth:`run` is set.

    ``concurrency`` handler threads run at most that many handlers at once; ``max_in_flight``
    (default ``concurrency + 10``, one receive's worth prefetched) bounds the messages held at
    once, running or waiting. ``receivers`` threads long-poll for ``wait_time_seconds``.

    A handler error makes the message visible again after ``retry.delay(receive_count)``
    seconds, or at once on the last attempt so that SQS redrives it without waiting.

    ``ready`` (optional) is polled before each receive: while it returns False (or raises) the
    receivers wait instead of taking messages they could not process.

    ``grace_period`` is how long :meth:`run` waits for running handlers after the stop event and
    ``settle_timeout`` how long for the last deletes; derive both from the stop timeout
    (:class:`servicekit.lifecycle.ShutdownBudget`). A handler still running then is abandoned:
    its message becomes visible again when its visibility timeout lapses.
    """

    def __init__(
        self,
        queue_url: str,
        model: type[M],
        handler: Callable[[Delivery[M]], object],
        *,
        concurrency: int = 10,
        max_in_flight: int | None = None,
        receivers: int = 1,
        wait_time_seconds: int = 20,
        retry: Backoff = DEFAULT_RETRY,
        defer_delay: int = 5,
        ready: Callable[[], bool] | None = None,
        working: Callable[[list[Delivery[M]]], Iterable[str]] | None = None,
        grace_period: float = 25.0,
        settle_timeout: float = 5.0,
        delete_linger: float = 0.02,
        liveness_timeout: float = 120.0,
        protection: TaskProtection | None = None,
        metrics: Metrics | None = None,
        on_poison: Callable[[Poison], None] | None = None,
        sqs: SQSClient | None = None,
    ) -> None:
        if concurrency < 1 or receivers < 1:
            raise ValueError("concurrency and receivers must be at least 1")
        self.queue_url = queue_url
        self.model = model
        self.handler = handler
        self.concurrency = concurrency
        self.max_in_flight = max(max_in_flight or concurrency + MAX_BATCH, concurrency)
        self.receivers = receivers
        self.wait_time_seconds = wait_time_seconds
        self.retry = retry
        self.defer_delay = defer_delay
        self.ready = ready
        self.working = working
        self.grace_period = grace_period
        self.settle_timeout = settle_timeout
        self.delete_linger = delete_linger
        self.liveness_timeout = liveness_timeout
        self.protection = protection
        self.metrics = metrics
        self.on_poison = on_poison
        self._sqs = sqs
        # Read from the queue by run(): the heartbeat and the redrive depend on them.
        self.visibility_timeout = 30
        self.max_receive_count = 0
        self.dead_letter_queue_url = ""

        self._lock = threading.Condition()
        self._stopping = threading.Event()  # no more intake
        self._closed = threading.Event()  # drain over: heartbeats and protection end
        self._ready: queue.SimpleQueue[_Message | None] = queue.SimpleQueue()
        self._held: dict[str, _Message] = {}  # by receipt handle, until deleted or released
        self._in_flight = 0  # messages received and not settled
        self._reserved = 0  # slots held for receive calls under way
        self._running = 0
        self._processed = 0
        self._failed = 0
        self._poisoned = 0
        self._deferred = 0
        self._gate_open = True
        self._last_loop = time.monotonic()
        self._deletes: list[_Message] = []
        self._deleting = 0  # delete batches under way
        self._visibility_lock = threading.Lock()
        self._protection_thread: threading.Thread | None = None

    # -- public --------------------------------------------------------------------------

    @property
    def sqs(self) -> SQSClient:
        if self._sqs is None:
            self._sqs = aws.client("sqs")
        return self._sqs

    def stats(self) -> ConsumerStats:
        with self._lock:
            return ConsumerStats(
                in_flight=self._in_flight,
                running=self._running,
                processed=self._processed,
                failed=self._failed,
                poisoned=self._poisoned,
                deferred=self._deferred,
                ready=self._gate_open,
                seconds_since_loop=round(time.monotonic() - self._last_loop, 3),
            )

    def check_liveness(self) -> None:
        """Raise if no receive loop has gone round for ``liveness_timeout`` seconds."""
        age = time.monotonic() - self._last_loop
        if age > self.liveness_timeout:
            raise RuntimeError(f"the receive loop has not polled for {age:.0f} s")

    def load_queue_attributes(self) -> None:
        """Read the visibility timeout and the redrive policy (the dead-letter queue)."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"]
        )["Attributes"]
        self.visibility_timeout = int(attributes["VisibilityTimeout"])
        if "RedrivePolicy" not in attributes:
            # Without one a failing message would be retried forever and poison has nowhere
            # to go: refuse to start rather than lose or loop on messages.
            raise ConfigurationError(
                f"queue {self.queue_url} has no RedrivePolicy (dead-letter queue)"
            )
        policy = json.loads(attributes["RedrivePolicy"])
        self.max_receive_count = int(policy["maxReceiveCount"])
        # arn:aws:sqs:region:account:name
        _, _, _, _, account, name = policy["deadLetterTargetArn"].split(":", 5)
        self.dead_letter_queue_url = self.sqs.get_queue_url(
            QueueName=name, QueueOwnerAWSAccountId=account
        )["QueueUrl"]
        logger.info(
            "consuming %s: visibility timeout %d s, maxReceiveCount %d, dead-letter queue %s",
            self.queue_url,
            self.visibility_timeout,
            self.max_receive_count,
            name,
        )

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set, then drain (see the class docstring) and return."""
        self.load_queue_attributes()
        self._last_loop = time.monotonic()
        self._start(self._handle_loop, self.concurrency, "handler")
        self._start(self._receive_loop, self.receivers, "receiver")
        self._start(self._heartbeat_loop, 1, "heartbeat")
        self._start(self._delete_loop, 1, "deleter")
        if self.protection is not None:
            self._protection_thread = self._start(self._protection_loop, 1, "protection")
        stop.wait()
        self._drain()

    # -- shutdown ------------------------------------------------------------------------

    def _drain(self) -> None:
        deadline = time.monotonic() + self.grace_period
        # The receivers may be inside a 20 s long poll: they are not waited for. A poll that
        # returns while this process still lives has its messages released at once (see
        # _receive_loop); one that returns after exit leaves them invisible until their
        # visibility timeout: delayed, never lost. Waiting out the poll instead would cost up to
        # 20 s of a stop window that ECS bounds at stopTimeout.
        with self._lock:
            self._stopping.set()
            self._lock.notify_all()
        waiting = []
        while True:
            try:
                item = self._ready.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                waiting.append(item)
        self._release(waiting)
        logger.info(
            "stopping: released %d waiting message(s), waiting for %d running handler(s)",
            len(waiting),
            self._running,
        )
        with self._lock:
            finished = self._lock.wait_for(
                lambda: self._running == 0, timeout=max(0.0, deadline - time.monotonic())
            )
            running = self._running
        for _ in range(self.concurrency):
            self._ready.put(None)
        self._flush_deletes(timeout=self.settle_timeout)
        if not finished:
            logger.error(
                "grace period of %.0f s over with %d handler(s) still running; their messages"
                " will be delivered again after the visibility timeout",
                self.grace_period,
                running,
            )
        with self._lock:
            self._closed.set()
            self._lock.notify_all()
        if self._protection_thread is not None and self.protection is not None:
            self._protection_thread.join(timeout=self.protection.timeout + 1.0)

    # -- threads -------------------------------------------------------------------------

    def _start(self, target: Callable[[], None], count: int, name: str) -> threading.Thread:
        for index in range(count):
            # Daemon threads: a stuck handler or a long poll must not keep the process alive
            # past the grace period.
            thread = threading.Thread(target=target, name=f"sqs-{name}-{index}", daemon=True)
            thread.start()
        return thread

    def _reserve(self) -> int:
        """Wait (at most 1 s) for free in-flight slots and reserve up to a receive's worth."""
        with self._lock:
            self._lock.wait_for(lambda: self._free() > 0 or self._stopping.is_set(), timeout=1.0)
            if self._stopping.is_set():
                return 0
            count = min(MAX_BATCH, self._free())
            self._reserved += count
            return count

    def _free(self) -> int:
        return self.max_in_flight - self._in_flight - self._reserved

    def _settle(self, count: int) -> None:
        with self._lock:
            self._in_flight -= count
            self._lock.notify_all()

    def _gate(self) -> bool:
        """Whether receiving makes sense now (the ``ready`` gate); logs each change."""
        if self.ready is None:
            return True
        try:
            ready = bool(self.ready())
        except Exception as error:
            logger.debug("readiness gate raised: %s", error)
            ready = False
        with self._lock:
            changed, self._gate_open = ready != self._gate_open, ready
        if changed and not ready:
            logger.warning("not ready (a dependency is down): receiving paused")
        elif changed:
            logger.info("ready again: receiving resumed")
        return ready

    def _receive_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._last_loop = time.monotonic()
            if not self._gate():
                self._stopping.wait(_GATE_INTERVAL)
                continue
            count = self._reserve()
            if count == 0:
                continue
            started = time.monotonic()
            try:
                raw = self.sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=count,
                    WaitTimeSeconds=self.wait_time_seconds,
                    MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except (ClientError, BotoCoreError) as error:
                with self._lock:
                    self._reserved -= count
                failures += 1
                delay = _RECEIVE_BACKOFF.delay(failures)
                logger.error(
                    "receive failed, retrying in %.1f s: %s",
                    delay,
                    aws.describe_error(error, service="sqs", resource=self.queue_url),
                )
                self._stopping.wait(delay)
                continue
            failures = 0
            messages = [_Message(m, started + self.visibility_timeout) for m in raw]
            with self._lock:
                self._reserved -= count
                self._in_flight += len(messages)
                self._held.update((m.receipt, m) for m in messages)
                self._lock.notify_all()  # the protection loop watches in-flight
                # Under the lock that _drain sets the stop with: a message is either queued
                # before the drain empties the queue, or released here.
                stopping = self._stopping.is_set()
                if not stopping:
                    for message in messages:
                        self._ready.put(message)
            if stopping:
                self._release(messages)

    def _handle_loop(self) -> None:
        while True:
            message = self._ready.get()
            if message is None:
                return
            with self._lock:
                stopping = self._stopping.is_set()
                if not stopping:
                    self._running += 1
            if stopping:
                self._release([message])
                continue
            try:
                self._handle(message)
            except Exception:
                # The runtime's own bookkeeping failed (not the handler): no more heartbeat,
                # so the message becomes visible again after its timeout.
                logger.exception("unexpected error settling message %s", message.message_id)
                self._forget([message])
            finally:
                with self._lock:
                    self._running -= 1
                    self._in_flight -= 1
                    self._lock.notify_all()

    def _heartbeat_loop(self) -> None:
        # Tick at a quarter of the visibility timeout and extend whatever has less than half
        # left: every held message is extended at least one tick before it would reappear.
        interval = max(0.25, self.visibility_timeout / 4)
        while not self._closed.wait(interval):
            self._extend_due()
            self._ask_working()

    def _extend_due(self) -> None:
        now = time.monotonic()
        # Held across the call: a release or a retry backoff decided meanwhile must not be
        # overwritten by an extension that was under way (see _let_go).
        with self._visibility_lock:
            with self._lock:
                due = [
                    m
                    for m in self._held.values()
                    if m.visible_until - now < self.visibility_timeout / 2
                ]
            if due:
                self._change_visibility(due, self.visibility_timeout, "heartbeat")

    def _ask_working(self) -> None:
        """Call the ``working`` hook with the running deliveries; disown those it leaves out."""
        if self.working is None:
            return
        with self._lock:
            running = [m for m in self._held.values() if m.delivery is not None and not m.done]
        if not running:
            return
        try:
            kept = set(self.working([m.delivery for m in running if m.delivery is not None]))
        except Exception:
            # Keeping every message is the safe side: nothing is redelivered under a live handler.
            logger.exception("the working hook failed; every running message is kept")
            return
        given_up = []
        with self._lock:
            for message in running:
                if message.message_id not in kept and not message.done:
                    message.abandoned = True
                    self._held.pop(message.receipt, None)
                    given_up.append(message.message_id)
            self._lock.notify_all()
        if given_up:
            logger.warning(
                "given up on %d running message(s) (%s): no longer extended, SQS delivers them "
                "again after the visibility timeout",
                len(given_up),
                ", ".join(given_up),
            )

    def _delete_loop(self) -> None:
        # Full batches are sent by the handler thread that completes them (see _delete); this
        # loop sends what is left after ``delete_linger``, so a quiet queue deletes promptly.
        while True:
            with self._lock:
                self._lock.wait_for(lambda: bool(self._deletes))
            time.sleep(self.delete_linger)
            with self._lock:
                batch = self._take_deletes()
            self._delete_batch(batch)

    def _protection_loop(self) -> None:
        assert self.protection is not None
        held = False
        renew_at = 0.0
        idle_since = time.monotonic()
        while not self._closed.is_set():
            with self._lock:
                self._lock.wait(timeout=min(1.0, self.protection.release_after))
                busy = bool(self._held)
            now = time.monotonic()
            if busy:
                idle_since = now
                if not held or now >= renew_at:
                    held = self._set_protection(True)
                    renew_at = now + self.protection.expires_in_minutes * 30
            elif held and now - idle_since >= self.protection.release_after:
                held = not self._set_protection(False)
        if held:
            self._set_protection(False)

    def _set_protection(self, enabled: bool) -> bool:
        assert self.protection is not None
        try:
            self.protection.set(enabled)
        except TaskProtectionError as error:
            logger.warning("task protection %s failed: %s", "on" if enabled else "off", error)
            return False
        logger.info("task scale-in protection %s", "on" if enabled else "off")
        return True

    # -- one message ---------------------------------------------------------------------

    def _handle(self, message: _Message) -> None:
        started = time.time()
        sent_ms = message.attribute("SentTimestamp")
        sent_at = int(sent_ms) / 1000 if sent_ms else None
        try:
            body = self.model.model_validate_json(message.raw["Body"])
        except ValidationError as error:
            self._poison(message, error)
            return
        delivery = Delivery(
            body=body,
            message_id=message.message_id,
            receive_count=int(message.attribute("ApproximateReceiveCount") or 1),
            max_receive_count=self.max_receive_count,
            sent_at=sent_at,
            message_attributes={
                name: value["StringValue"]
                for name, value in message.raw.get("MessageAttributes", {}).items()
                if "StringValue" in value
            },
        )
        message.delivery = delivery
        outcome = "Processed"
        with log_context(message_id=message.message_id):
            try:
                self.handler(delivery)
            except DependencyUnavailable as error:
                outcome = "Deferred"
                logger.warning(
                    "message %s handed back in %d s, not counted as a failure: %s",
                    message.message_id,
                    self.defer_delay,
                    error,
                )
            except GiveUp as error:
                outcome = "GivenUp"
                logger.warning(
                    "handler gave up on message %s (%s): deleted", message.message_id, error
                )
            except Exception:
                outcome = "Failed"
                logger.exception(
                    "handler failed for message %s (attempt %d of %d)",
                    message.message_id,
                    delivery.receive_count,
                    delivery.max_receive_count,
                )
        self._settle_outcome(message, delivery, outcome)
        if self.metrics is not None:
            outcome = "Failed" if outcome == "GivenUp" else outcome
            values = {outcome: 1.0, "HandlerLatency": (time.time() - started) * 1000}
            units = {outcome: "Count", "HandlerLatency": "Milliseconds"}
            if sent_at is not None:
                values["MessageAge"] = (started - sent_at) * 1000
                units["MessageAge"] = "Milliseconds"
            self.metrics.emit(values, units, message_id=message.message_id)

    def _settle_outcome(self, message: _Message, delivery: Delivery[M], outcome: str) -> None:
        with self._lock:
            message.done = True
            abandoned = message.abandoned
            if abandoned:
                self._failed += 1  # it ran past what the working hook allowed
            elif outcome == "Processed":
                self._processed += 1
            elif outcome == "Deferred":
                self._deferred += 1
            else:
                self._failed += 1
        if abandoned:
            # Its receipt may belong to a new delivery by now: no SQS call on its behalf.
            logger.warning("message %s: handler returned after it was given up", message.message_id)
        elif outcome in ("Processed", "GivenUp"):
            self._delete(message)
        elif outcome == "Deferred":
            self._let_go([message], self.defer_delay, "defer")
        else:
            self._retry_later(message, delivery)

    def _retry_later(self, message: _Message, delivery: Delivery[M]) -> None:
        # On the last attempt at once: the next receive redrives it to the dead-letter queue.
        delay = 0 if delivery.last_attempt else math.ceil(self.retry.delay(delivery.receive_count))
        self._let_go([message], delay, "retry")

    def _poison(self, message: _Message, error: ValidationError) -> None:
        reason = "; ".join(
            f"{'.'.join(str(p) for p in problem['loc']) or 'body'}: {problem['msg']}"
            for problem in error.errors(include_url=False, include_input=False)
        )[:1000]
        logger.error(
            "poison message %s sent to the dead-letter queue: %s", message.message_id, reason
        )
        attributes: dict[str, MessageAttributeValueTypeDef] = {
            name: {
                key: value[key]
                for key in ("DataType", "StringValue", "BinaryValue")
                if key in value
            }  # type: ignore[misc]
            for name, value in message.raw.get("MessageAttributes", {}).items()
        }
        if len(attributes) < MAX_BATCH:  # SQS allows 10 message attributes
            attributes[POISON_REASON_ATTRIBUTE] = {"DataType": "String", "StringValue": reason}
        try:
            self.sqs.send_message(
                QueueUrl=self.dead_letter_queue_url,
                MessageBody=message.raw["Body"],
                MessageAttributes=attributes,
            )
        except (ClientError, BotoCoreError) as send_error:
            # Keep it in the queue: it comes back after the visibility timeout, and SQS's own
            # redrive moves it once maxReceiveCount is reached.
            logger.error(
                "could not send poison message %s to the DLQ: %s",
                message.message_id,
                aws.describe_error(send_error, service="sqs"),
            )
            self._forget([message])
            return
        with self._lock:
            self._poisoned += 1
        if self.metrics is not None:
            self.metrics.emit(
                {"Poisoned": 1.0}, {"Poisoned": "Count"}, message_id=message.message_id
            )
        if self.on_poison is not None:
            try:
                self.on_poison(Poison(message.message_id, message.raw["Body"], reason))
            except Exception:
                logger.exception("on_poison hook failed for message %s", message.message_id)
        self._delete(message)

    # -- SQS calls -----------------------------------------------------------------------

    def _forget(self, messages: Iterable[_Message]) -> None:
        with self._lock:
            for message in messages:
                self._held.pop(message.receipt, None)
            self._lock.notify_all()

    def _let_go(self, messages: list[_Message], seconds: int, purpose: str) -> None:
        """Stop the heartbeat of ``messages`` and make them visible again after ``seconds``."""
        with self._visibility_lock:
            self._forget(messages)
            self._change_visibility(messages, seconds, purpose)

    def _release(self, messages: list[_Message]) -> None:
        """Make messages visible again now (received but never started)."""
        if messages:
            self._let_go(messages, 0, "release")
            self._settle(len(messages))

    def _delete(self, message: _Message) -> None:
        with self._lock:
            self._deletes.append(message)
            self._lock.notify_all()
            if len(self._deletes) < MAX_BATCH:
                return
            batch = self._take_deletes()
        self._delete_batch(batch)

    def _take_deletes(self) -> list[_Message]:
        """Up to a batch of pending deletes, counted as under way (call with the lock held)."""
        batch, self._deletes = self._deletes[:MAX_BATCH], self._deletes[MAX_BATCH:]
        self._deleting += 1
        return batch

    def _flush_deletes(self, timeout: float) -> None:
        """Send every pending delete and wait for those under way in other threads."""
        while True:
            with self._lock:
                if not self._deletes:
                    self._lock.wait_for(lambda: self._deleting == 0, timeout=timeout)
                    return
                batch = self._take_deletes()
            self._delete_batch(batch)

    def _delete_batch(self, batch: list[_Message]) -> None:
        def call(entries: list[tuple[str, _Message]]) -> Any:
            return self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": key, "ReceiptHandle": m.receipt} for key, m in entries],
            )

        try:
            if batch:
                self._batch_call(batch, call, "delete")
        finally:
            self._forget(batch)
            with self._lock:
                self._deleting -= 1
                self._lock.notify_all()

    def _change_visibility(self, messages: list[_Message], seconds: int, purpose: str) -> None:
        def call(entries: list[tuple[str, _Message]]) -> Any:
            return self.sqs.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": key, "ReceiptHandle": m.receipt, "VisibilityTimeout": seconds}
                    for key, m in entries
                ],
            )

        for start in range(0, len(messages), MAX_BATCH):
            requested = time.monotonic()
            done = self._batch_call(messages[start : start + MAX_BATCH], call, purpose)
            for message in done:
                message.visible_until = requested + seconds

    def _batch_call(
        self,
        batch: list[_Message],
        call: Callable[[list[tuple[str, _Message]]], Any],
        purpose: str,
    ) -> list[_Message]:
        """Run a *Batch call, retrying entries that failed on the server's side.

        Returns the messages that succeeded. An entry that failed through the sender's fault
        (typically ReceiptHandleIsInvalid: the message was already redelivered elsewhere) is not
        retried: it is logged, and the message will come back after its visibility timeout.
        """
        entries = [(str(index), message) for index, message in enumerate(batch)]
        succeeded: list[_Message] = []
        for attempt in range(_BATCH_RETRIES):
            try:
                answer = call(entries)
            except (ClientError, BotoCoreError) as error:
                logger.warning(
                    "%s batch call failed (attempt %d): %s",
                    purpose,
                    attempt + 1,
                    aws.describe_error(error, service="sqs"),
                )
                time.sleep(_BATCH_BACKOFF.delay(attempt + 1))
                continue
            by_id = dict(entries)
            succeeded += [by_id[entry["Id"]] for entry in answer.get("Successful", [])]
            retry = []
            for failure in answer.get("Failed", []):
                message = by_id[failure["Id"]]
                if failure.get("SenderFault"):
                    logger.warning(
                        "%s refused for message %s: %s %s",
                        purpose,
                        message.message_id,
                        failure.get("Code"),
                        failure.get("Message", ""),
                    )
                else:
                    retry.append((failure["Id"], message))
            if not retry:
                return succeeded
            entries = retry
            time.sleep(_BATCH_BACKOFF.delay(attempt + 1))
        logger.error(
            "%s gave up on %d message(s) after %d attempts: %s",
            purpose,
            len(entries),
            _BATCH_RETRIES,
            ", ".join(m.message_id for _, m in entries),
        )
        return succeeded
