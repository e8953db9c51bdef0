"""The worker process (the ``worker`` command): settings, database pool, HTTP endpoints, then the
consumer until SIGTERM.

Exit status: 0 after a stop (SIGTERM/SIGINT, handlers drained), 2 when the configuration is
invalid (every problem listed), 1 when the queue cannot be consumed at start.
"""

from __future__ import annotations

import logging
import os

from servicekit import aws
from servicekit.consumer import Consumer, TaskProtection
from servicekit.db import Database
from servicekit.errors import ConfigurationError
from servicekit.health import HealthRegistry
from servicekit.lifecycle import Lifecycle
from servicekit.logging import configure_logging
from servicekit.metrics import Metrics
from servicekit.tracing import configure_tracing, shutdown_tracing
from worker.processing import JobMessage, JobProcessor
from worker.server import serve
from worker.settings import Settings

__all__ = ["main"]

logger = logging.getLogger("worker")


def main() -> int:
    # First, so a SIGTERM during a slow start-up still ends in an orderly stop.
    lifecycle = Lifecycle()
    lifecycle.install_signal_handlers()
    configure_logging(
        service=os.environ.get("SERVICE_NAME", "worker"),
        env=os.environ.get("APP_ENV", "development"),
    )
    try:
        settings = Settings.load()
    except ConfigurationError as error:
        logger.critical("%s", error)
        return 2
    configure_logging(service=settings.service_name, env=settings.app_env, level=settings.log_level)
    configure_tracing(
        service=settings.service_name,
        enabled=settings.tracing_enabled,
        endpoint=settings.otel_exporter_otlp_endpoint,
    )
    database = Database(settings.db_secret, settings.database, name=settings.service_name)
    database.open()
    processor = JobProcessor(database)
    consumer = Consumer(
        settings.queue_url,
        JobMessage,
        processor,
        concurrency=settings.concurrency,
        max_in_flight=settings.max_in_flight,
        receivers=settings.receivers,
        wait_time_seconds=settings.wait_time_seconds,
        retry_base_delay=settings.retry_base_delay,
        retry_max_delay=settings.retry_max_delay,
        grace_period=settings.grace_period,
        liveness_timeout=settings.liveness_timeout,
        protection=TaskProtection.from_environment(
            os.environ, expires_in_minutes=settings.protection_minutes
        ),
        metrics=Metrics(
            settings.app_name, {"Service": settings.service_name, "Env": settings.app_env}
        ),
        on_poison=processor.on_poison,
    )
    health = HealthRegistry()
    health.add_liveness("consumer", consumer.check_liveness)
    health.add_readiness("database", database.check)
    health.add_readiness("sqs", lambda: _queue_reachable(settings.queue_url))
    health.add_readiness("lifecycle", lifecycle.check)
    server = serve(settings.port, health, consumer.stats)
    logger.info("worker listening on port %d", server.server_port)
    try:
        consumer.run(lifecycle.stop_event)
    except ConfigurationError as error:
        logger.critical("%s", error)
        return 2
    except Exception:
        logger.exception("the consumer could not start")
        return 1
    finally:
        server.shutdown()
        database.close()
        shutdown_tracing()
    logger.info("worker stopped (%s)", lifecycle.reason)
    return 0


def _queue_reachable(queue_url: str) -> None:
    aws.client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
