"""The job-scheduling runtime: one registry of jobs, two ways to run them, one run per slot.

A service declares its jobs in a :class:`JobRegistry` (name, EventBridge ``cron()``/``rate()``
schedule, timezone, timeout, function); a bad schedule raises :class:`InvalidJob` naming the job
when the module declaring it is imported. The registry is the single source of truth:
:meth:`JobRegistry.export` is what the infrastructure turns into EventBridge Scheduler schedules.

Two modes over the same registry:

- :meth:`Runner.run` (``run JOB``): one run, what an EventBridge schedule starts as an ECS task.
  The slot is the schedule's latest fire time at or before the instant given (the schedule passes
  ``<aws.scheduler.scheduled-time>``) or now; an instant between fire times is moved back to the
  slot it falls in, so a trigger a few seconds late, a retried trigger and ``serve`` all name a
  run the same way. rate() slots are counted from the Unix epoch (UTC).
- :func:`serve`: APScheduler 3 fires every job in this process (local compose, or one always-on
  task), with a ``/health`` endpoint.

Either way a run first inserts ``(job, slot)`` into ``schedule_runs`` (unique): whoever inserts
runs it, everyone else logs ``skipped: slot already run``. So two schedulers, an overlapping
deployment or a retried trigger never run a job twice for one slot. The price is at most once:
a run whose process is killed outright stays ``running`` in the history and its slot is not run
again; the next slot runs as usual.

Stopping. A job gets a :class:`JobContext`; at its timeout, or when the process is asked to stop
(SIGTERM through :class:`servicekit.lifecycle.Lifecycle`), the context is cancelled and the job
has ``stop_grace`` seconds to return (it polls :meth:`JobContext.check` between units of work).
A job that finishes within the grace after SIGTERM counts as succeeded; one that raises
:class:`JobCancelled` is ``interrupted``; after a timeout the run is ``timed_out``. One that is
still running after the grace is abandoned and recorded as timed out or interrupted: every run
that started is recorded. (Python cannot kill a thread: ``run`` exits and takes it along; in
``serve`` it runs on unobserved, so jobs should check their context.)
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from psycopg.rows import tuple_row

from servicekit.cron import Schedule, ScheduleError, parse
from servicekit.health import HealthRegistry, HealthServer
from servicekit.logging import log_context, redact

if TYPE_CHECKING:
    import psycopg

    from servicekit.metrics import Metrics

__all__ = [
    "InvalidJob",
    "JobCancelled",
    "JobContext",
    "JobDefinition",
    "JobRegistry",
    "Outcome",
    "RunRecord",
    "RunStatus",
    "RunStore",
    "Runner",
    "serve",
]

D = TypeVar("D")

logger = logging.getLogger(__name__)

# EventBridge Scheduler's rule for schedule names: the job name becomes the schedule's name.
_JOB_NAME = re.compile(r"[0-9A-Za-z_.-]{1,64}")
_MAX_ERROR = 2000
# How often a waiting run looks at its stop event; a stop is noticed at most this late.
_POLL_SECONDS = 0.2


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
    job as ``context.deps`` (database, settings, clients).
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
    ) -> None:
        self.registry = registry
        self.store = store
        self.deps = deps
        self.stop = stop
        self.stop_grace = stop_grace
        self.host = host or f"{socket.gethostname()}:{os.getpid()}"
        self.metrics = metrics

    def run(self, name: str, at: datetime | None = None) -> Outcome:
        """Run ``name`` for the slot ``at`` falls in (default: now), unless it already ran."""
        job = self.registry.get(name)
        slot = job.slot_at(at or datetime.now(UTC))
        with log_context(job=name, slot=slot.isoformat()):
            if self.stop.is_set():
                # Not claimed: a later trigger for this slot may still run it.
                logger.warning("not started: the process is stopping")
                return Outcome.INTERRUPTED
            run_id = self.store.claim(name, slot, self.host)
            if run_id is None:
                logger.info("skipped: slot already run")
                return Outcome.SKIPPED
            logger.info("started")
            started = time.monotonic()
            status, error = self._execute(job, JobContext(name, slot, self.deps, job.timeout))
            seconds = time.monotonic() - started
            try:
                self.store.finish(run_id, status, error)
            except Exception:
                # The job's work is done (or not) whatever the history says: report its outcome.
                logger.exception("the run's end (%s) could not be recorded", status.value)
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
            return Outcome(status.value)

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
    *,
    health: HealthRegistry,
    health_port: int | None = 8081,
    misfire_grace_time: float = 60.0,
    coalesce: bool = True,
) -> None:
    """Fire every job of the runner's registry in this process until ``runner.stop`` is set.

    - ``coalesce=True``: after a pause longer than a job's period (a suspended laptop, a
      stalled host) the missed fire times collapse into one run, for the latest slot.
    - ``misfire_grace_time``: a fire time later than this many seconds is dropped (logged by
      APScheduler) rather than run late; the next fire time runs as usual.
    - ``max_instances=1``: a job still running when its next fire time comes is not started
      twice in this process (APScheduler logs the skip); other processes are held off by
      the slot lock.

    On ``health_port`` (None: no server), ``/health`` answers ``health``'s liveness, to which a
    ``scheduler`` check is added, and ``/ready`` its readiness.
    On stop: no new runs, running ones get ``stop_grace`` to end and are recorded.
    """
    scheduler = BackgroundScheduler(
        timezone=UTC,
        executors={"default": ThreadPoolExecutor(max_workers=max(1, len(runner.registry)))},
        job_defaults={
            "coalesce": coalesce,
            "misfire_grace_time": misfire_grace_time,
            "max_instances": 1,
        },
    )
    for job in runner.registry:
        scheduler.add_job(
            _run_logged, trigger=job.trigger(), args=(runner, job.name), id=job.name, name=job.name
        )

    def scheduler_alive() -> None:
        if not scheduler.running:
            raise RuntimeError("the scheduler is not running")

    health.add_liveness("scheduler", scheduler_alive)
    # Each run logs its own start and end with the job and slot: APScheduler's per-run lines
    # ("Running job", "executed successfully") would double every one of them.
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    scheduler.start()
    server = HealthServer(health, health_port) if health_port is not None else None
    logger.info(
        "serving %d job(s): %s",
        len(runner.registry),
        ", ".join(f"{job.name} {job.schedule.expression}" for job in runner.registry),
    )
    try:
        runner.stop.wait()
        logger.info("stopping: waiting for running jobs")
        # Running jobs see the stop event themselves and end within stop_grace.
        scheduler.shutdown(wait=True)
    finally:
        if server is not None:
            server.close()
    logger.info("stopped")


def _run_logged(runner: Runner[Any], name: str) -> None:
    try:
        runner.run(name)
    except Exception:
        # APScheduler would log it too, but without the job and slot context.
        logger.exception("run of %s could not be started or recorded", name)
