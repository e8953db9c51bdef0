"""The worker's settings: environment variables (upper-case names) or ``/{app}/{env}/worker/``."""

from __future__ import annotations

from datetime import timedelta
from typing import Self

from pydantic import Field, model_validator

from servicekit.db import DatabaseServiceSettings
from servicekit.lifecycle import MAX_STOP_TIMEOUT, ShutdownBudget
from servicekit.retry import Backoff

__all__ = ["Settings"]


class Settings(DatabaseServiceSettings):
    """What the worker needs; the consumer's knobs map one to one onto :class:`Consumer`."""

    queue_url: str = Field(description="URL of the SQS jobs queue (QUEUE_URL)")
    concurrency: int = Field(default=8, ge=1, description="handlers running at once")
    max_in_flight: int | None = Field(
        default=None, ge=1, description="messages held at once (default concurrency + 10)"
    )
    receivers: int = Field(default=1, ge=1, description="threads long-polling the queue")
    wait_time_seconds: int = Field(default=20, ge=0, le=20, description="long-poll wait")
    retry_base_delay: float = Field(default=5.0, ge=0, description="first retry's backoff, s")
    retry_max_delay: float = Field(default=300.0, ge=0, description="longest retry backoff, s")
    stop_timeout: float = Field(
        default=30.0,
        gt=0,
        le=MAX_STOP_TIMEOUT,
        description="the task's stopTimeout (service.toml task.stop_timeout; the infrastructure "
        "sets STOP_TIMEOUT): the whole shutdown fits in it, see `shutdown`",
    )
    lease_seconds: float = Field(
        default=120.0,
        ge=1,
        description="a running job's lease, renewed on every heartbeat (a quarter of the "
        "visibility timeout): requeue-stuck takes the job once it lapses",
    )
    liveness_timeout: float = Field(
        default=120.0, gt=0, description="/health fails when the receive loop is stuck this long"
    )
    protection_minutes: int = Field(
        default=60, ge=1, le=2880, description="ECS task scale-in protection expiry while busy"
    )
    port: int = Field(default=8080, ge=0, le=65535, description="/health, /ready, /stats (PORT)")

    @property
    def shutdown(self) -> ShutdownBudget:
        """How ``stop_timeout`` is spent: the handlers' grace period is what is left."""
        return ShutdownBudget(self.stop_timeout)

    @property
    def retry(self) -> Backoff:
        return Backoff(base=self.retry_base_delay, cap=self.retry_max_delay)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # Every running handler uses a connection at its start and at its end.
        if self.database.pool_size < self.concurrency:
            raise ValueError(
                f"database.pool_size ({self.database.pool_size}) is below concurrency "
                f"({self.concurrency}): handlers would wait for connections"
            )
        self.shutdown  # noqa: B018 - raises ValueError when the steps do not fit
        self.retry  # noqa: B018 - raises ValueError unless retry_base_delay <= retry_max_delay
        return self
