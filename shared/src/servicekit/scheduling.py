"""The job-scheduling runtime: one registry of jobs, one way to run them, one run per slot.

A service declares its jobs in a :class:`JobRegistry` (name, EventBridge ``cron()``/``rate()``
schedule, timezone, timeout, function); a bad schedule raises :class:`InvalidJob` naming the job
when the module declaring it is imported. The registry is the single source of truth:
:meth:`JobRegistry.export` is what the infrastructure turns into EventBridge Scheduler schedules.

Every run starts from a *firing*, a :class:`Firing` message ``{"job", "slot"}`` on the service's
firings queue, consumed by :func:`serve` through :class:`servicekit.consumer.Consumer`:

- in AWS, one EventBridge Scheduler schedule per job sends it (``slot`` is
  ``<aws.scheduler.scheduled-time>``), with Scheduler's retries and dead-letter queue;
- locally, ``serve(..., clock=True)`` runs APScheduler 3 in the process, and each fire time sends
  the same message to the same queue;
- ``suite run JOB`` sends one by hand.

The slot is the schedule's latest fire time at or before the firing's ``slot``, so a trigger a
few seconds late, a retried or duplicated firing and the local clock all name a run the same way.
rate() slots are counted from the Unix epoch (UTC). :meth:`Runner.run` runs one slot in the
calling process (``scheduler run JOB``, an operator's manual run).

Either way a run first inserts ``(job, slot)`` into ``schedule_runs`` (unique): whoever inserts
runs it, everyone else logs ``skipped: slot already run``. So two schedulers, an overlapping
deployment or a duplicated firing never run a job twice for one slot.

A run whose process dies outright (SIGKILL, lost host) stays ``running``, and its firing is not
deleted: it comes back when its visibility timeout lapses. The next attempt finds the slot's run
still ``running`` after longer than any live run can take (the job's timeout, the stop grace and
``report_margin``: a live runner records every run by then) and records it ``failed`` with
``died`` in the error, writing the failure metric a live failure writes. Hence the firings
queue's visibility timeout must exceed that (:meth:`Runner.check_visibility_timeout`): an earlier
redelivery could not tell a dead run from a live one and would skip it.

Stopping. A job gets a :class:`JobContext`; at its timeout, or when the process is asked to stop
(SIGTERM through :class:`servicekit.lifecycle.Lifecycle`), the context is cancelled and the job
has ``stop_grace`` seconds to return (it polls :meth:`JobContext.check` between units of work).
A job that finishes within the grace after SIGTERM counts as succeeded; one that raises
:class:`JobCancelled` is ``interrupted``; after a timeout the run is ``timed_out``. One that is
still running after the grace is abandoned and recorded as timed out or interrupted: every run
that started is recorded. (Python cannot kill a thread: it runs on unobserved, so jobs should
check their context.) A firing received while stopping is handed back to the queue unclaimed.
"""

from __future__ import annotations

import contextvars
import importlib
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from botocore.exceptions import BotoCoreError, ClientError
from psycopg.rows import tuple_row
from pydantic import AwareDatetime, BaseModel, ConfigDict, model_validator

from servicekit import aws
from servicekit.cron import Schedule, ScheduleError, parse
from servicekit.errors import ConfigurationError, DependencyUnavailable
from servicekit.health import HealthRegistry, HealthServer
from servicekit.logging import log_context, redact

if TYPE_CHECKING:
    import psycopg

    from servicekit.consumer import Consumer, Delivery
    from servicekit.metrics import Metrics

__all__ = [
    "FIRINGS_MARGIN",
    "Firing",
    "FiringsQueue",
    "InvalidJob",
    "InvalidRegistry",
    "JobCancelled",
    "JobContext",
    "JobDefinition",
    "JobRegistry",
    "Outcome",
    "RunRecord",
    "RunStatus",
    "RunStore",
    "Runner",
    "load_registry",
    "send_firing",
    "serve",
]

D = TypeVar("D")

logger = logging.getLogger(__name__)

# EventBridge Scheduler's rule for schedule names: the job name becomes the schedule's name.
_JOB_NAME = re.compile(r"[0-9A-Za-z_.-]{1,64}")
_MAX_ERROR = 2000
# How often a waiting run looks at its stop event; a stop is noticed at most this late.
_POLL_SECONDS = 0.2
FIRINGS_MARGIN = 60
FIRINGS_MAX_RECEIVES = 5


class InvalidJob(ValueError):
    """A job declaration the registry refuses (bad schedule, timezone, name or timeout)."""


class JobCancelled(Exception):
    """Raised by :meth:`JobContext.check` once the run has to stop (timeout or shutdown)."""


class JobContext(Generic[D]):
    """What a job function gets: its slot, the service's dependencies, and its stop signal."""

    def __init__(self, job: str, slot: datetime, deps: D, timeout: float) -> None:
        self.job = job
        self.slot = slot
        self.deps = deps
        self.deadline = time.monotonic() + timeout
        self.stop_reason: str | None = None
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def remaining(self) -> float:
        """Seconds left before the job's timeout."""
        return max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        """Raise :class:`JobCancelled` if the run has to stop; call it between units of work."""
        if self._cancelled.is_set():
            raise JobCancelled(self.stop_reason or "cancelled")

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (at once) when the run has to stop."""
        return self._cancelled.wait(seconds)

    def cancel(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._cancelled.set()


JobFunction = Callable[[JobContext[D]], None]


@dataclass(frozen=True)
class JobDefinition(Generic[D]):
    """One registered job."""

    name: str
    schedule: Schedule
    timezone: str
    timeout: float
    """Seconds the job may run before it is cancelled."""
    function: JobFunction[D]
    description: str

    def slot_at(self, instant: datetime) -> datetime:
        """The slot ``instant`` falls in: the latest fire time at or before it (UTC)."""
        slot = self.schedule.slot_at(instant, self.timezone)
        if slot is None:
            raise ValueError(
                f"job {self.name!r}: {self.schedule.expression} never fired by {instant}"
            )
        return slot

    def trigger(self) -> Any:
        return self.schedule.trigger(self.timezone)

    def export(self) -> dict[str, object]:
        return {
            "name": self.name,
            "expression": self.schedule.expression,
            "timezone": self.timezone,
            "timeout_seconds": self.timeout,
            "description": self.description,
        }


class JobRegistry(Generic[D]):
    """The jobs of one service, validated as they are declared.

    ``allow_second_rates`` admits ``rate(N seconds)``, which EventBridge lacks: for test
    registries only, and such a registry refuses to export.
    """

    def __init__(self, *, allow_second_rates: bool = False) -> None:
        self.allow_second_rates = allow_second_rates
        self._jobs: dict[str, JobDefinition[D]] = {}

    def job(
        self, name: str, *, schedule: str, timeout: float, timezone: str = "UTC"
    ) -> Callable[[JobFunction[D]], JobFunction[D]]:
        """Decorator form of :meth:`add`; the function's docstring becomes the description."""

        def register(function: JobFunction[D]) -> JobFunction[D]:
            self.add(name, function, schedule=schedule, timeout=timeout, timezone=timezone)
            return function

        return register

    def add(
        self,
        name: str,
        function: JobFunction[D],
        *,
        schedule: str,
        timeout: float,
        timezone: str = "UTC",
    ) -> JobDefinition[D]:
        if not _JOB_NAME.fullmatch(name):
            raise InvalidJob(f"job {name!r}: a name is 1-64 of [0-9A-Za-z_.-] (a schedule name)")
        if name in self._jobs:
            raise InvalidJob(f"job {name!r} is registered twice")
        try:
            parsed = parse(schedule, allow_seconds=self.allow_second_rates)
        except ScheduleError as error:
            raise InvalidJob(f"job {name!r}: invalid schedule {error}") from None
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidJob(f"job {name!r}: unknown timezone {timezone!r}") from None
        if not timeout > 0:
            raise InvalidJob(f"job {name!r}: timeout must be positive, got {timeout}")
        description = (function.__doc__ or "").strip().splitlines()
        job = JobDefinition(
            name, parsed, timezone, float(timeout), function, description[0] if description else ""
        )
        self._jobs[name] = job
        return job

    def get(self, name: str) -> JobDefinition[D]:
        try:
            return self._jobs[name]
        except KeyError:
            known = ", ".join(sorted(self._jobs)) or "none"
            raise KeyError(f"no job named {name!r} (registered: {known})") from None

    def __iter__(self) -> Iterator[JobDefinition[D]]:
        return iter(self._jobs.values())

    def __len__(self) -> int:
        return len(self._jobs)

    def export(self) -> list[dict[str, object]]:
        """name, expression, timezone, timeout_seconds, description per job, sorted by name."""
        if self.allow_second_rates:
            raise ValueError(
                "a registry allowing rate(N seconds) is for tests; EventBridge lacks it"
            )
        return [job.export() for job in sorted(self, key=lambda job: job.name)]


class InvalidRegistry(ValueError):
    """A ``module:attribute`` registry reference that does not lead to a valid registry."""


def load_registry(reference: str) -> JobRegistry[Any]:
    """The registry ``module:attribute`` names (``registry`` when no attribute is given).

    The one reading of a scheduled service's ``[trigger] registry``: the service runs it, the
    infra exports its schedules at synthesis and the compose init step sizes the firings queue
    from it. Importing declares the jobs, validating them, and connects nowhere.
    """
    module_name, _, attribute = reference.partition(":")
    try:
        registry = getattr(importlib.import_module(module_name), attribute or "registry")
    except InvalidJob as error:
        raise InvalidRegistry(f"registry {reference}: {error}") from None
    except (ImportError, AttributeError) as error:
        raise InvalidRegistry(f"registry {reference} cannot be loaded: {error}") from None
    if not isinstance(registry, JobRegistry):
        raise InvalidRegistry(
            f"registry {reference} is a {type(registry).__name__}, not a JobRegistry"
        )
    return registry


class Firing(BaseModel):
    """One firing of a job's schedule: the firings queue's message body.

    ``slot`` is the fire time (EventBridge Scheduler's ``<aws.scheduler.scheduled-time>``); the
    run is for the slot it falls in. :meth:`Runner.firing_model` refuses a job the registry
    lacks, so such a message is poison (dead-lettered at once, the reason attached).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    job: str
    slot: AwareDatetime

    @classmethod
    def of(cls, job: str, slot: datetime) -> Firing:
        return cls(job=job, slot=slot.astimezone(UTC))


@dataclass(frozen=True)
class FiringsQueue:
    """The firings queue's figures, for the infra and compose alike.

    ``visibility_timeout``: the longest job's timeout plus the stop timeout plus
    :data:`FIRINGS_MARGIN`. A live run has recorded its end within its timeout, the stop grace
    and the report margin (each within those figures), so a firing redelivered later finds a
    run still ``running`` dead, never live (:meth:`Runner.check_visibility_timeout` refuses a
    shorter one). ``max_receive_count``: a firing is received once; once more after its process
    died, and again for each stop that hands it back: more is something to look at (its DLQ).
    """

    visibility_timeout: int
    max_receive_count: int = FIRINGS_MAX_RECEIVES

    @classmethod
    def for_jobs(cls, timeouts: Iterable[float], stop_timeout: float) -> FiringsQueue:
        return cls(math.ceil(max(timeouts, default=0.0) + stop_timeout + FIRINGS_MARGIN))


def send_firing(queue_url: str, job: str, slot: datetime) -> str:
    """Send ``job``'s firing for ``slot`` to the firings queue; its message id."""
    sent = aws.client("sqs").send_message(
        QueueUrl=queue_url, MessageBody=Firing.of(job, slot).model_dump_json()
    )
    return sent["MessageId"]


class RunStatus(StrEnum):
    """A run's state in ``schedule_runs``."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"


class Outcome(StrEnum):
    """What :meth:`Runner.run` did: a final run status, or ``skipped`` (slot taken)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"

    @property
    def exit_code(self) -> int:
        """0 when the slot's work is done (by this run or an earlier one), else 1."""
        return 0 if self in (Outcome.SUCCEEDED, Outcome.SKIPPED) else 1


@dataclass(frozen=True)
class RunRecord:
    """One row of the run history."""

    id: int
    job: str
    slot: datetime
    status: RunStatus
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    host: str


class Connections(Protocol):
    """What the run store needs: :class:`servicekit.db.Database` is one."""

    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]: ...


class RunStore:
    """The ``schedule_runs`` table (migration 0002_schedule_runs): slot locks and history."""

    def __init__(self, database: Connections) -> None:
        self.database = database

    def claim(self, job: str, slot: datetime, host: str) -> int | None:
        """Insert the run for (job, slot); its id, or None when someone already has the slot."""
        with self.database.connection() as conn, conn.cursor(row_factory=tuple_row) as cursor:
            row = cursor.execute(
                "INSERT INTO schedule_runs (job, slot, host) VALUES (%s, %s, %s)"
                " ON CONFLICT (job, slot) DO NOTHING RETURNING id",
                (job, slot, host),
            ).fetchone()
        return None if row is None else int(row[0])

    def fail_dead(
        self, job: str, slot: datetime, older_than: timedelta, error: str
    ) -> RunRecord | None:
        """Record the slot's run ``failed`` if it is still ``running`` after ``older_than``.

        Its process died before reporting: a live runner records every run within that time.
        The run as it was found (still ``running``), or None when it is not such a run.
        """
        with self.database.connection() as conn, conn.cursor(row_factory=tuple_row) as cursor:
            row = cursor.execute(
                "UPDATE schedule_runs SET status = %s, error = %s, finished_at = now()"
                " WHERE job = %s AND slot = %s AND status = %s AND started_at < now() - %s"
                " RETURNING id, job, slot, started_at, host",
                (RunStatus.FAILED.value, error, job, slot, RunStatus.RUNNING.value, older_than),
            ).fetchone()
        if row is None:
            return None
        run_id, job, slot, started_at, host = row
        return RunRecord(run_id, job, slot, RunStatus.RUNNING, started_at, None, None, host)

    def finish(self, run_id: int, status: RunStatus, error: str | None) -> None:
        with self.database.connection() as conn:
            conn.execute(
                "UPDATE schedule_runs SET status = %s, error = %s, finished_at = now()"
                " WHERE id = %s",
                (status.value, error, run_id),
            )

    def runs(self, job: str | None = None, *, limit: int = 100) -> list[RunRecord]:
        """The latest runs, newest slot first (of one job, or of all)."""
        with self.database.connection() as conn, conn.cursor(row_factory=tuple_row) as cursor:
            rows = cursor.execute(
                "SELECT id, job, slot, status, started_at, finished_at, error, host"
                " FROM schedule_runs WHERE %(job)s::text IS NULL OR job = %(job)s"
                " ORDER BY slot DESC, job LIMIT %(limit)s",
                {"job": job, "limit": limit},
            ).fetchall()
        return [RunRecord(row[0], row[1], row[2], RunStatus(row[3]), *row[4:]) for row in rows]

    def purge(self, older_than: timedelta) -> int:
        """Delete finished runs whose slot is older than ``older_than``; how many went."""
        with self.database.connection() as conn:
            cursor = conn.execute(
                "DELETE FROM schedule_runs WHERE slot < now() - %s AND status <> %s",
                (older_than, RunStatus.RUNNING.value),
            )
            return cursor.rowcount


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return redact(text)[:_MAX_ERROR]


class Runner(Generic[D]):
    """Runs registry jobs one slot at a time, recording each run in a :class:`RunStore`.

    ``stop`` is the process's stop event (``Lifecycle.stop_event``); ``deps`` is handed to every
    job as ``context.deps`` (database, settings, clients). ``report_margin``: seconds past a
    job's timeout and the stop grace within which a live runner has recorded its run (the
    database write); a run still ``running`` later than that has died.
    """

    def __init__(
        self,
        registry: JobRegistry[D],
        store: RunStore,
        deps: D,
        *,
        stop: threading.Event,
        stop_grace: float = 20.0,
        host: str | None = None,
        metrics: Metrics | None = None,
        report_margin: float = 30.0,
    ) -> None:
        self.registry = registry
        self.store = store
        self.deps = deps
        self.stop = stop
        self.stop_grace = stop_grace
        self.host = host or f"{socket.gethostname()}:{os.getpid()}"
        self.metrics = metrics
        self.report_margin = report_margin

    def reported_within(self, job: JobDefinition[D]) -> timedelta:
        """How long after its start a live runner has recorded a run of ``job``."""
        return timedelta(seconds=job.timeout + self.stop_grace + self.report_margin)

    def check_visibility_timeout(self, seconds: int) -> None:
        """Refuse a firings queue that would redeliver a firing while its run may still live.

        A redelivered firing whose run is still ``running`` is taken for a dead run only once
        the run is older than :meth:`reported_within`; redelivered earlier, it would be skipped
        and a run that died would never be reported.
        """
        longest = max(self.reported_within(job).total_seconds() for job in self.registry)
        if seconds < longest:
            raise ConfigurationError(
                f"the firings queue's visibility timeout ({seconds} s) is shorter than the "
                f"longest a run takes to report ({longest:g} s: a job's timeout + stop grace + "
                "report margin): a run whose process died would go unreported"
            )

    def firing_model(self) -> type[Firing]:
        """:class:`Firing` restricted to this registry's jobs and their schedules' range."""
        registry = self.registry

        class RegisteredFiring(Firing):
            @model_validator(mode="after")
            def _registered(self) -> RegisteredFiring:
                try:
                    registry.get(self.job).slot_at(self.slot)
                except KeyError as error:
                    raise ValueError(error.args[0]) from None
                return self

        return RegisteredFiring

    def handle(self, delivery: Delivery[Firing]) -> None:
        """The firings consumer's handler: run the firing's slot once, then the message goes.

        A run that fails is recorded (history, metric): the firing is done with either way,
        since its slot is taken. One not started (the process is stopping, the database is
        down) raises :class:`DependencyUnavailable`: the firing goes back to the queue.
        """
        with log_context(receive_count=delivery.receive_count):
            self.run(delivery.body.job, at=delivery.body.slot)

    def run(self, name: str, at: datetime | None = None) -> Outcome:
        """Run ``name`` for the slot ``at`` falls in (default: now), unless it already ran.

        Raises :class:`DependencyUnavailable` without claiming the slot when the process is
        stopping, so another firing (or process) may still run it.
        """
        job = self.registry.get(name)
        slot = job.slot_at(at or datetime.now(UTC))
        with log_context(job=name, slot=slot.isoformat()):
            if self.stop.is_set():
                logger.warning("not started: the process is stopping")
                raise DependencyUnavailable("scheduler", "the process is stopping")
            run_id = self.store.claim(name, slot, self.host)
            if run_id is None:
                return self._taken(job, slot)
            logger.info("started")
            started = time.monotonic()
            status, error = self._execute(job, JobContext(name, slot, self.deps, job.timeout))
            seconds = time.monotonic() - started
            try:
                self.store.finish(run_id, status, error)
            except Exception:
                # The job's work is done (or not) whatever the history says: report its outcome.
                logger.exception("the run's end (%s) could not be recorded", status.value)
            self._report(name, run_id, status, seconds, error)
            return Outcome(status.value)

    def _taken(self, job: JobDefinition[D], slot: datetime) -> Outcome:
        """The slot has a run already: skipped, unless that run died before reporting."""
        reported_within = self.reported_within(job)
        dead = self.store.fail_dead(
            job.name,
            slot,
            reported_within,
            f"died: no report within {reported_within.total_seconds():g} s of its start "
            "(timeout + stop grace + report margin); its process was killed or lost",
        )
        if dead is None:
            logger.info("skipped: slot already run")
            return Outcome.SKIPPED
        logger.info("the run of %s started at %s never reported", dead.host, dead.started_at)
        seconds = (datetime.now(UTC) - dead.started_at).total_seconds()
        self._report(
            job.name, dead.id, RunStatus.FAILED, seconds, "its process died before reporting"
        )
        return Outcome.FAILED

    def _report(
        self, name: str, run_id: int, status: RunStatus, seconds: float, error: str | None
    ) -> None:
        """The run's end: a log line, and the EMF document the run-failures alarm counts."""
        level = logging.INFO if status is RunStatus.SUCCEEDED else logging.ERROR
        logger.log(
            level,
            "finished: %s in %.3f s%s",
            status.value,
            seconds,
            f" ({error})" if error else "",
            extra={"run_id": run_id, "status": status.value, "duration": seconds},
        )
        if self.metrics is not None:
            self.metrics.emit(
                {"ScheduledRuns": 1, "ScheduledRunDuration": seconds},
                {"ScheduledRuns": "Count", "ScheduledRunDuration": "Seconds"},
                job=name,
                status=status.value,
            )

    def _execute(
        self, job: JobDefinition[D], context: JobContext[D]
    ) -> tuple[RunStatus, str | None]:
        """Call the job on its own thread, cancel it at its timeout or on stop; the result."""
        raised: list[BaseException] = []
        done = threading.Event()

        def call() -> None:
            try:
                job.function(context)
            except BaseException as error:  # every failure is recorded
                raised.append(error)
            finally:
                done.set()

        # A daemon thread: a job ignoring its cancellation must not keep the process alive.
        # The copied context carries log_context's job and slot into the job's log lines.
        thread = threading.Thread(
            target=contextvars.copy_context().run, args=(call,), name=f"job-{job.name}", daemon=True
        )
        thread.start()
        cancelled: RunStatus | None = None
        while not done.is_set():
            remaining = context.deadline - time.monotonic()
            if remaining <= 0:
                cancelled = RunStatus.TIMED_OUT
                context.cancel(f"timed out after {job.timeout:g} s")
                break
            if self.stop.is_set():
                cancelled = RunStatus.INTERRUPTED
                context.cancel("the process is stopping")
                break
            done.wait(min(remaining, _POLL_SECONDS))
        if cancelled is not None and not done.wait(self.stop_grace):
            return cancelled, (
                f"{context.stop_reason}; still running {self.stop_grace:g} s later, abandoned"
            )
        if cancelled is RunStatus.TIMED_OUT:
            return cancelled, context.stop_reason
        if not raised:
            return RunStatus.SUCCEEDED, None
        if isinstance(raised[0], JobCancelled):
            return RunStatus.INTERRUPTED, context.stop_reason
        logger.error("job raised", exc_info=raised[0])
        return RunStatus.FAILED, _describe(raised[0])


def serve(
    runner: Runner[D],
    firings: Consumer[Firing],
    *,
    health: HealthRegistry,
    health_port: int | None = 8081,
    clock: bool = False,
    misfire_grace_time: float = 60.0,
    coalesce: bool = True,
) -> None:
    """Run every firing of the firings queue (``firings``, whose handler is
    :meth:`Runner.handle`) until ``runner.stop`` is set.

    ``clock``: also fire every job of the registry from this process (APScheduler 3), each
    fire time sending its :class:`Firing` to the same queue; where EventBridge Scheduler is
    the clock (AWS) it is off.

    - ``coalesce=True``: after a pause longer than a job's period (a suspended laptop, a
      stalled host) the missed fire times collapse into one firing, for the latest slot.
    - ``misfire_grace_time``: a fire time later than this many seconds is dropped (logged by
      APScheduler) rather than sent late; the next fire time fires as usual.

    On ``health_port`` (None: no server), ``/health`` answers ``health``'s liveness, to which
    the consumer's receive loop (and the clock) are added, and ``/ready`` its readiness.
    On stop: no new firings are taken, running ones get ``stop_grace`` to end and are recorded.
    """
    firings.load_queue_attributes()
    runner.check_visibility_timeout(firings.visibility_timeout)
    health.add_liveness("firings", firings.check_liveness)
    scheduler = _clock(runner, firings.queue_url, misfire_grace_time, coalesce) if clock else None
    if scheduler is not None:

        def clock_alive() -> None:
            if not scheduler.running:
                raise RuntimeError("the clock is not running")

        health.add_liveness("clock", clock_alive)
        scheduler.start()
    server = HealthServer(health, health_port) if health_port is not None else None
    logger.info(
        "running %d job(s)%s: %s",
        len(runner.registry),
        " on this process's clock" if clock else "",
        ", ".join(f"{job.name} {job.schedule.expression}" for job in runner.registry),
    )
    try:
        firings.run(runner.stop)
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        if server is not None:
            server.close()
    logger.info("stopped")


def _clock(
    runner: Runner[Any], queue_url: str, misfire_grace_time: float, coalesce: bool
) -> BackgroundScheduler:
    """APScheduler firing every job of the registry into the firings queue."""
    scheduler = BackgroundScheduler(
        timezone=UTC,
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"coalesce": coalesce, "misfire_grace_time": misfire_grace_time},
    )
    for job in runner.registry:
        scheduler.add_job(
            _fire,
            trigger=job.trigger(),
            args=(queue_url, job),
            id=job.name,
            name=job.name,
        )
    # Each firing logs its own line: APScheduler's per-call lines would double every one.
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    return scheduler


def _fire(queue_url: str, job: JobDefinition[Any]) -> None:
    slot = job.slot_at(datetime.now(UTC))
    try:
        send_firing(queue_url, job.name, slot)
    except (ClientError, BotoCoreError) as error:
        # botocore retried already; the next fire time sends the next slot, this one is lost.
        logger.error(
            "firing of %s for %s not sent: %s",
            job.name,
            slot.isoformat(),
            aws.describe_error(error, service="sqs", resource=queue_url),
        )
        return
    logger.debug("fired %s for %s", job.name, slot.isoformat())
