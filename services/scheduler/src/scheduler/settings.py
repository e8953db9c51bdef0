"""The scheduler's settings: environment variables (upper-case names) or SSM parameters
under ``/{app}/{env}/scheduler/``.

Only ``run``, ``serve`` and ``redrive-dead`` load them: ``schedules`` reads the registry alone,
so the infrastructure can export the schedules at synth time without AWS access.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from servicekit.db import DatabaseServiceSettings, DatabaseSettings
from servicekit.lifecycle import MAX_STOP_TIMEOUT, ShutdownBudget

__all__ = ["Settings"]


class Settings(DatabaseServiceSettings):
    """What ``run`` and ``serve`` need, and the example jobs' knobs."""

    # A run uses a connection or two at a time, and most of the time none.
    database: DatabaseSettings = Field(
        default_factory=lambda: DatabaseSettings(pool_min_size=0, pool_size=4)
    )
    queue_url: str = Field(description="URL of the SQS jobs queue the outbox sweep sends to")
    firings_queue_url: str = Field(
        description="URL of the SQS queue of the schedules' firings ({job, slot}) serve runs"
    )
    local_clock: bool = Field(
        default=False,
        description="serve: APScheduler in this process sends the firings (compose); in AWS "
        "EventBridge Scheduler does",
    )
    health_port: int = Field(default=8081, ge=0, le=65535, description="serve mode's /health")
    stop_grace: float = Field(
        default=20.0,
        gt=0,
        le=MAX_STOP_TIMEOUT,
        description="seconds a cancelled job (timeout, SIGTERM) gets to return; under stopTimeout",
    )
    stop_timeout: float = Field(
        default=30.0,
        gt=0,
        le=MAX_STOP_TIMEOUT,
        description="the task's stopTimeout (STOP_TIMEOUT): serve's whole shutdown fits in it",
    )
    report_margin: float = Field(
        default=30.0,
        gt=0,
        description="seconds past a job's timeout + stop_grace by which a live run has been "
        "recorded: a run still `running` later died, and its redelivered firing records it so",
    )
    misfire_grace_time: float = Field(
        default=60.0, gt=0, description="local clock: a fire time later than this is not sent"
    )
    outbox_min_age: float = Field(
        default=30.0, ge=0, description="seconds a job waits for the API's relays before the sweep"
    )
    retry_margin: float = Field(
        default=1200.0,
        ge=0,
        description="seconds of retry backoff a message may spend beyond its visibility timeouts "
        "(the worker's retry_max_delay x (maxReceiveCount - 1)); resend-lost waits that too",
    )
    retention_days: int = Field(
        default=30, ge=1, description="finished jobs and run history older than this are purged"
    )

    @property
    def shutdown(self) -> ShutdownBudget:
        """How ``stop_timeout`` is spent by ``serve``: running jobs get the grace."""
        return ShutdownBudget(self.stop_timeout, protection=0.0)

    @model_validator(mode="after")
    def _stops_in_time(self) -> Self:
        # A stopping run needs its stop_grace and then a moment to record its end.
        if self.stop_grace >= self.shutdown.grace:
            raise ValueError(
                f"stop_grace ({self.stop_grace:g} s) does not fit in the {self.shutdown.grace:g} s "
                f"STOP_TIMEOUT ({self.stop_timeout:g} s) leaves running jobs"
            )
        return self
