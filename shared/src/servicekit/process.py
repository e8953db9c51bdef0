"""One start-up and shut-down for a service's long-running command (the worker, the scheduler).

:func:`run_service` does, in this order:

1. SIGTERM/SIGINT handlers (:class:`~servicekit.lifecycle.Lifecycle`), first, so a SIGTERM during
   a slow start-up still ends in an orderly stop;
2. JSON logging named from the environment (``SERVICE_NAME``, ``APP_ENV``), so even a
   configuration failure is one JSON line;
3. the service's ``main``, which loads its settings with :meth:`ServiceProcess.load` (logging
   again under their names and level, then tracing as they say);
4. on the way out, buffered spans flushed.

A :class:`~servicekit.errors.ConfigurationError` out of ``main`` (the settings, or a dependency
found misconfigured at start) is logged as one critical line listing every problem, and the exit
status is :data:`EXIT_CONFIGURATION`; otherwise it is what ``main`` returns.

Not for the API: under gunicorn the master owns the signals and the log handlers
(``logconfig_dict``), and settings are loaded per worker in the app's lifespan.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TypeVar

from servicekit.errors import ConfigurationError
from servicekit.lifecycle import Lifecycle
from servicekit.logging import configure_logging
from servicekit.settings import DEVELOPMENT, ServiceSettings
from servicekit.tracing import configure_tracing_from, shutdown_tracing

__all__ = ["EXIT_CONFIGURATION", "ServiceProcess", "run_service"]

# 2, like a usage error: retrying the same task definition cannot help.
EXIT_CONFIGURATION = 2

S = TypeVar("S", bound=ServiceSettings)


class ServiceProcess:
    """What ``main`` gets from :func:`run_service`: the stop signal and the settings loader."""

    def __init__(self, service: str) -> None:
        self.lifecycle = Lifecycle()
        self.logger = logging.getLogger(service)

    def load(self, settings_cls: type[S]) -> S:
        """The settings (:meth:`ServiceSettings.load`); then logging and tracing as they say."""
        settings = settings_cls.load()
        configure_logging(
            service=settings.service_name, env=settings.app_env, level=settings.log_level
        )
        configure_tracing_from(settings)
        return settings


def run_service(service: str, main: Callable[[ServiceProcess], int]) -> int:
    """Run ``main`` as the process's body (see the module docstring); its exit status."""
    process = ServiceProcess(service)
    process.lifecycle.install_signal_handlers()
    configure_logging(
        service=os.environ.get("SERVICE_NAME", service),
        env=os.environ.get("APP_ENV", DEVELOPMENT),
    )
    try:
        return main(process)
    except ConfigurationError as error:
        process.logger.critical("%s", error)
        return EXIT_CONFIGURATION
    finally:
        shutdown_tracing()
