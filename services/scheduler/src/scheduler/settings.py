"""The scheduler's settings: environment variables (upper-case names) or SSM parameters
under ``/{app}/{env}/scheduler/``.

Only ``run`` and ``serve`` load them: ``schedules`` reads the registry alone, so the
infrastructure can export the schedules at synth time without AWS access.
"""

from __future__ import annotations

from pydantic import Field

from servicekit.db import DatabaseServiceSettings, DatabaseSettings
from servicekit.lifecycle import MAX_STOP_TIMEOUT

__all__ = ["Settings"]


class Settings(DatabaseServiceSettings):
    """What ``run`` and ``serve`` need, and the example jobs' knobs."""

    # A run uses a connection or two at a time, and most of the time none.
    database: DatabaseSettings = Field(
        default_factory=lambda: DatabaseSettings(pool_min_size=0, pool_size=4)
    )
    queue_url: str = Field(description="URL of the SQS jobs queue the outbox sweep sends to")
    health_port: int = Field(default=8081, ge=0, le=65535, description="serve mode's /health")
    stop_grace: float = Field(
        default=20.0,
        gt=0,
        le=MAX_STOP_TIMEOUT,
        description="seconds a cancelled job (timeout, SIGTERM) gets to return; under stopTimeout",
    )
    misfire_grace_time: float = Field(
        default=60.0, gt=0, description="serve: a fire time later than this is dropped, not run"
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
