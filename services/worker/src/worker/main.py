"""The worker process (the ``worker`` command): settings, database pool, HTTP endpoints, then the
consumer until SIGTERM.

HTTP endpoints (``PORT``, 8080, behind the internal ALB):

- ``GET /health``: liveness, the consumer's receive loop went round recently (no dependency call:
  a database outage must not get every task restarted);
- ``GET /ready``: the database and the queue answer, and the worker is not stopping;
- ``GET /stats``: in-flight, running, processed, failed, poisoned and deferred counts, and whether
  the consumer is receiving (``ready``), for other services through service discovery.

While the database check fails the consumer takes no messages (its ``ready`` gate); the ones it
holds come back to the queue without counting as failures, and it resumes on recovery.

Shutdown (SIGTERM) fits in the task's stopTimeout (``STOP_TIMEOUT``, see
:class:`servicekit.lifecycle.ShutdownBudget`): running handlers get what is left after the last
SQS calls, the task-protection release and closing the pool.

Exit status: 0 after a stop (SIGTERM/SIGINT, handlers drained), 2 when the configuration is
invalid (every problem listed), 1 when the queue cannot be consumed at start.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from functools import partial

from jobs.repository import JobMessage
from servicekit import aws
from servicekit.consumer import Consumer, TaskProtection
from servicekit.db import open_database
from servicekit.errors import ConfigurationError
from servicekit.health import HealthRegistry, HealthServer
from servicekit.metrics import Metrics
from servicekit.process import ServiceProcess, run_service
from worker.processing import JobProcessor
from worker.settings import Settings

__all__ = ["main"]

logger = logging.getLogger("worker")


def main() -> int:
    return run_service("worker", _work)


def _work(process: ServiceProcess) -> int:
    settings = process.load(Settings)
    lifecycle = process.lifecycle
    budget = settings.shutdown
    database = open_database(settings)
    processor = JobProcessor(database, lease=settings.lease)
    consumer = Consumer(
        settings.queue_url,
        JobMessage,
        processor,
        concurrency=settings.concurrency,
        max_in_flight=settings.max_in_flight,
        receivers=settings.receivers,
        wait_time_seconds=settings.wait_time_seconds,
        retry=settings.retry,
        ready=database.answers,
        working=processor.working,
        grace_period=budget.grace,
        settle_timeout=budget.settle,
        liveness_timeout=settings.liveness_timeout,
        protection=TaskProtection.from_environment(
            os.environ, expires_in_minutes=settings.protection_minutes, timeout=budget.protection
        ),
        metrics=Metrics.for_service(settings),
        on_poison=processor.on_poison,
    )
    health = HealthRegistry()
    health.add_liveness("consumer", consumer.check_liveness)
    health.add_readiness("database", database.check)
    health.add_readiness("sqs", partial(aws.check_queue, settings.queue_url))
    health.add_readiness("lifecycle", lifecycle.check)
    server = HealthServer(
        health, settings.port, routes={"/stats": lambda: dataclasses.asdict(consumer.stats())}
    )
    logger.info("worker listening on port %d", server.port)
    try:
        consumer.run(lifecycle.stop_event)
    except ConfigurationError:
        raise  # exit status 2, logged by run_service
    except Exception:
        logger.exception("the consumer could not start")
        return 1
    finally:
        server.close()
        database.close(timeout=budget.close)
    logger.info("worker stopped (%s)", lifecycle.reason)
    return 0
