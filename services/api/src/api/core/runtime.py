"""What a worker process builds at start-up and closes on the way out.

Built by the app's lifespan, so once per gunicorn worker and after fork: settings (env,
Parameter Store, the database secret), the log level, tracing, the database pool, the feature
flags, the readiness checks and the token verifier. Settings that do not load stop the worker
with the error listing every problem (gunicorn then exits: ECS shows the reason and the
deployment circuit breaker rolls back) rather than serving half-configured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

from api.core.config import Flags, Settings
from api.core.security import TokenVerifier
from servicekit import aws
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
        health = HealthRegistry()
        health.add_readiness("database", database.check)
        health.add_readiness("sqs", partial(aws.check_queue, settings.queue_url))
        # No fetch here: the issuer's keys are fetched by the first request that needs them.
        return cls(settings, database, flags, health, TokenVerifier(settings.auth))

    def close(self) -> None:
        self.database.close()
        shutdown_tracing()
