"""What a worker process builds at start-up and closes on the way out.

Built by the app's lifespan, so once per gunicorn worker and after fork: settings (env,
Parameter Store, the database secret), the log level, tracing, the database pool, the feature
flags, the readiness checks, the token verifier and the outbox relay (the thread that sends the
jobs' SQS messages). Settings that do not load stop the worker with the error listing every
problem (gunicorn then exits: ECS shows the reason and the deployment circuit breaker rolls back)
rather than serving half-configured.
"""

from __future__ import annotations

import logging
import socket
import zlib
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from api.core.config import Flags, Settings
from api.core.security import TokenVerifier
from jobs.outbox import Outbox, Relay
from servicekit import db
from servicekit.db import Database, open_database
from servicekit.flags import FeatureFlags
from servicekit.health import HealthRegistry
from servicekit.tracing import configure_tracing_from, shutdown_tracing

__all__ = ["Runtime"]


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    database: Database
    flags: FeatureFlags[Flags]
    health: HealthRegistry
    tokens: TokenVerifier
    relay: Relay

    @classmethod
    def start(cls) -> Runtime:
        """Load settings and build every client; blocking (AWS calls), so run off the loop."""
        settings = Settings.load()
        # The handlers are the process's (gunicorn's logconfig_dict); the level is a setting.
        logging.getLogger().setLevel(settings.log_level.upper())
        configure_tracing_from(settings)
        database = open_database(settings)
        flags = FeatureFlags(
            Flags,
            app=settings.app_name,
            env=settings.app_env,
            service=settings.service_name,
            ttl=settings.flags_ttl_seconds,
        )
        flags.get()  # read now, so the first request does not wait on Parameter Store
        # Readiness is "can accept jobs": the database only. SQS is the relay's business; while
        # it is down jobs are still accepted and wait in the outbox.
        health = HealthRegistry()
        health.add_readiness("database", database.check)
        relay = Relay(
            Outbox(database, settings.queue_url, claim_for=timedelta(seconds=30)),
            partial(
                db.connect,
                settings.db_secret,
                settings.database,
                application_name=f"{settings.service_name}-outbox-relay",
            ),
            poll_interval=settings.outbox_poll_seconds,
            # The task's workers take turns (one relay per task sends); every task sends.
            lead_key=zlib.crc32(socket.gethostname().encode()) & 0x7FFFFFFF,
        )
        relay.start()
        # No fetch here: the issuer's keys are fetched by the first request that needs them.
        return cls(settings, database, flags, health, TokenVerifier(settings.auth), relay)

    def close(self) -> None:
        self.relay.stop()
        self.database.close()
        shutdown_tracing()
