"""The scheduler's command line (``scheduler`` or ``python -m scheduler``).

    scheduler serve                       run every firing of the firings queue (the service);
                                          LOCAL_CLOCK=true: APScheduler here sends them (compose)
    scheduler run JOB [--slot ISO-8601]   one run in this process (by hand, e.g. `suite exec`)
    scheduler schedules [--json]          the registry, for people or for the infrastructure
    scheduler redrive-dead [--id ID]... [--type TYPE] [--since ISO-8601] [--limit N]
                                          the DLQ reconciled (as reconcile-dlq does), then the
                                          chosen dead jobs back to queued, attempts reset; the
                                          outbox sends them (at least one filter is required).
                                          What `suite jobs dead --redrive` runs as a one-off task

``--registry MODULE:ATTRIBUTE`` (default ``$SCHEDULER_REGISTRY``, else ``scheduler.jobs:registry``)
picks the registry, e.g. a test registry. ``run --slot``: the run is for the slot that instant
falls in (the schedule's latest fire time at or before it); without it, the current slot.

Exit status:

- 0: ``run``: the job succeeded, or its slot had already been run (the log says
  ``skipped: slot already run``); ``serve``: stopped by SIGTERM/SIGINT; ``schedules``: printed;
  ``redrive-dead``: the jobs chosen (none, possibly) are back in the outbox.
- 1: ``run``: the job failed, timed out or was interrupted, or the database could not be
  reached to claim or record the run; ``serve``: the firings queue cannot be consumed;
  ``redrive-dead``: the database could not be reached.
- 2: usage or configuration: unknown job, bad ``--slot``, ``redrive-dead`` without a filter, a
  registry that does not load (an
  invalid schedule names its job), missing or invalid settings, a firings queue without a
  dead-letter queue or whose visibility timeout is too short to tell a dead run.

Why 0 for a slot already run: the slot's work is done, by another process. A duplicated
firing, a second scheduler or an overlapping deployment is the lock doing its job, not a
failure, and must not page anyone; the log line tells the cases apart.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from uuid import UUID

from botocore.exceptions import BotoCoreError, ClientError

from jobs import repository
from scheduler.jobs import Resources, reconcile_dead_letters
from scheduler.settings import Settings
from servicekit import aws
from servicekit.consumer import Consumer
from servicekit.db import open_database
from servicekit.errors import ConfigurationError, DependencyUnavailable
from servicekit.health import HealthRegistry
from servicekit.lifecycle import Lifecycle
from servicekit.metrics import Metrics
from servicekit.process import EXIT_CONFIGURATION, ServiceProcess, run_service
from servicekit.scheduling import JobRegistry, Runner, RunStore, load_registry, serve

__all__ = ["DEFAULT_REGISTRY", "main"]

DEFAULT_REGISTRY = "scheduler.jobs:registry"

logger = logging.getLogger("scheduler")


def _instant(text: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    if instant.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no timezone (e.g. 2026-03-10T12:00:00Z)")
    return instant.astimezone(UTC)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scheduler",
        description="Run the scheduler's jobs: every firing of the firings queue, or once by hand.",
    )
    parser.add_argument(
        "--registry",
        default=os.environ.get("SCHEDULER_REGISTRY", DEFAULT_REGISTRY),
        help="MODULE:ATTRIBUTE of the job registry (default $SCHEDULER_REGISTRY or %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one job once, for one slot, in this process")
    run.add_argument("job")
    run.add_argument(
        "--slot", type=_instant, help="an instant of the slot (ISO-8601 with offset; default now)"
    )
    commands.add_parser("serve", help="run every firing of the firings queue until SIGTERM")
    schedules = commands.add_parser("schedules", help="list the registry's schedules")
    schedules.add_argument("--json", action="store_true", help="machine-readable, for the infra")
    redrive = commands.add_parser(
        "redrive-dead", help="put chosen dead jobs back in the queue (attempts reset)"
    )
    redrive.add_argument(
        "--id", dest="ids", type=UUID, action="append", metavar="ID", help="a job id (repeatable)"
    )
    redrive.add_argument("--type", dest="job_type", help="only dead jobs of this type")
    redrive.add_argument("--since", type=_instant, help="only jobs dead at or after this time")
    redrive.add_argument("--limit", type=int, default=100, help="at most this many (%(default)s)")
    return parser


def _print_schedules(registry: JobRegistry[Resources], as_json: bool) -> None:
    if as_json:
        print(json.dumps(registry.export(), indent=2))
        return
    now = datetime.now(UTC)
    for job in registry:
        upcoming = job.trigger().get_next_fire_time(None, now)
        when = upcoming.astimezone(UTC).isoformat() if upcoming is not None else "never again"
        print(
            f"{job.name:<24} {job.schedule.expression:<28} {job.timezone:<16} "
            f"timeout {job.timeout:g} s  next {when}  {job.description}"
        )


@contextmanager
def _runner(
    registry: JobRegistry[Resources], settings: Settings, lifecycle: Lifecycle
) -> Iterator[Runner[Resources]]:
    database = open_database(settings)
    runs = RunStore(database)
    try:
        yield Runner(
            registry,
            runs,
            Resources(settings, database, runs),
            stop=lifecycle.stop_event,
            stop_grace=settings.stop_grace,
            metrics=Metrics.for_service(settings),
            report_margin=settings.report_margin,
        )
    finally:
        database.close()


def _run(runner: Runner[Resources], job: str, slot: datetime | None) -> int:
    try:
        outcome = runner.run(job, at=slot)
    except DependencyUnavailable as error:
        logger.error("not run: %s", error)
        return 1
    except Exception:
        logger.exception("not run: the run could not be claimed")
        return 1
    return outcome.exit_code


def _serve(runner: Runner[Resources], settings: Settings, lifecycle: Lifecycle) -> int:
    database = runner.deps.database
    budget = settings.shutdown
    firings = Consumer(
        settings.firings_queue_url,
        runner.firing_model(),
        runner.handle,
        # Every job may run at once (they all fire at :00); a backlog waits its turn.
        concurrency=len(runner.registry),
        ready=database.answers,
        # A stopping run gets stop_grace, then its end is written: within the budget's grace.
        grace_period=budget.grace,
        settle_timeout=budget.settle,
        metrics=Metrics.for_service(settings),
    )
    health = HealthRegistry()
    health.add_readiness("database", database.check)
    health.add_readiness("sqs", partial(aws.check_queue, settings.firings_queue_url))
    health.add_readiness("lifecycle", lifecycle.check)
    try:
        serve(
            runner,
            firings,
            health=health,
            health_port=settings.health_port,
            clock=settings.local_clock,
            misfire_grace_time=settings.misfire_grace_time,
        )
    except ConfigurationError:
        raise  # exit status 2, logged by run_service
    except Exception:
        logger.exception("the firings queue could not be consumed")
        return 1
    logger.info("scheduler stopped (%s)", lifecycle.reason)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``scheduler`` command; the exit status is documented in the module docstring."""
    args = _parser().parse_args(argv)
    if args.command == "schedules":
        # No logging set up and nothing but the schedules on stdout: a build reads it.
        try:
            _print_schedules(load_registry(args.registry), args.json)
        except ValueError as error:
            print(f"scheduler: {error}", file=sys.stderr)
            return EXIT_CONFIGURATION
        return 0

    if args.command == "redrive-dead" and not (args.ids or args.job_type or args.since):
        print("scheduler: redrive-dead needs --id, --type or --since", file=sys.stderr)
        return EXIT_CONFIGURATION
    return run_service("scheduler", partial(_start, args))


def _redrive(args: argparse.Namespace, settings: Settings) -> int:
    database = open_database(settings)
    try:
        # A job whose retries ran out is dead only once its DLQ message is reconciled: do it
        # now, so it can be chosen without waiting for the next reconcile-dlq run.
        reconcile_dead_letters(settings, database)
        with database.connection() as conn:
            redriven = repository.redrive_dead(
                conn,
                job_ids=args.ids,
                job_type=args.job_type,
                dead_since=args.since,
                limit=args.limit,
            )
    except (DependencyUnavailable, BotoCoreError, ClientError) as error:
        logger.error("nothing redriven: %s", error)
        return 1
    finally:
        database.close()
    ids = [str(job.id) for job in redriven]
    logger.info("%d dead job(s) back in the outbox", len(ids), extra={"job_ids": ids})
    return 0


def _start(args: argparse.Namespace, process: ServiceProcess) -> int:
    if args.command == "redrive-dead":
        return _redrive(args, process.load(Settings))
    try:
        registry: JobRegistry[Resources] = load_registry(args.registry)
        if args.command == "run":
            job = registry.get(args.job)
            if args.slot is not None:
                job.slot_at(args.slot)  # a slot before the schedule's first fire time is usage
    except (KeyError, ValueError) as error:
        logger.critical("%s", error.args[0] if isinstance(error, KeyError) else error)
        return EXIT_CONFIGURATION
    settings = process.load(Settings)
    with _runner(registry, settings, process.lifecycle) as runner:
        if args.command == "run":
            return _run(runner, args.job, args.slot)
        return _serve(runner, settings, process.lifecycle)
