"""The API's settings and feature flags.

Nothing here is built at import: :meth:`Settings.load` runs in each gunicorn worker's lifespan
(after fork), and the flags are read through :class:`servicekit.flags.FeatureFlags` at request
time. The worker count and the socket options are gunicorn's (:mod:`api.gunicorn_conf`,
environment only): the master needs them before any settings could be read.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from servicekit.db import DatabaseServiceSettings

__all__ = ["Flags", "Settings"]


class Settings(DatabaseServiceSettings):
    """Environment variables (upper-case field names) or ``/{app}/{env}/api/...`` parameters."""

    queue_url: str = Field(description="URL of the SQS jobs queue (QUEUE_URL)")
    max_body_bytes: int = Field(
        default=64 * 1024, gt=0, description="larger request bodies are answered 413"
    )
    retry_after_seconds: int = Field(
        default=5, gt=0, description="Retry-After of 503 answers while a dependency is down"
    )
    outbox_poll_seconds: float = Field(
        default=5.0,
        gt=0,
        description="the outbox relay looks for unsent jobs this often even without a NOTIFY",
    )
    flags_ttl_seconds: float = Field(
        default=30.0, gt=0, description="how long feature flags are kept before a re-read"
    )


class Flags(BaseModel):
    """Feature flags: ``/{app}/{env}/api/flags/{name}`` (or ``.../shared/flags/{name}``).

    ``accept_jobs``: ``false`` pauses job intake: ``POST /jobs`` answers 503 ``intake_paused``
    (with Retry-After) while reads go on, e.g. during a database migration or a worker incident,
    without a deploy. Takes effect within ``flags_ttl_seconds``.
    """

    accept_jobs: bool = True
