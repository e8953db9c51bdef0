"""The API's settings and feature flags.

Nothing here is built at import: :meth:`Settings.load` runs in each gunicorn worker's lifespan
(after fork), and the flags are read through :class:`servicekit.flags.FeatureFlags` at request
time. The worker count and the socket options are gunicorn's (:mod:`api.gunicorn_conf`,
environment only): the master needs them before any settings could be read.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobs.types import JOB_TYPES
from servicekit.db import DatabaseServiceSettings
from servicekit.settings import DEVELOPMENT

__all__ = ["AuthSettings", "Flags", "Settings", "WorkerFleetSettings"]


class AuthSettings(BaseModel):
    """Who may call: the token issuer (Cognito) and the app clients it issues tokens to.

    Nested as ``auth`` (``AUTH__ISSUER``, SSM ``.../api/auth/issuer``).
    """

    model_config = ConfigDict(frozen=True)

    issuer: str = Field(
        description="the exact `iss` of accepted tokens; Cognito: "
        "https://cognito-idp.{region}.amazonaws.com/{poolId}"
    )
    jwks_url: str | None = Field(
        default=None,
        description="the issuer's signing keys; default {issuer}/.well-known/jwks.json",
    )
    audiences: frozenset[str] = Field(
        min_length=1,
        description="accepted `client_id` (Cognito access tokens) or `aud` values (JSON list)",
    )
    scope_prefix: str = Field(
        default="", description="what the issuer puts before scope names (Cognito: the resource "
        "server identifier and a slash)"
    )  # fmt: skip
    leeway_seconds: float = Field(
        default=30.0, ge=0, le=300, description="clock skew allowed on `exp`, `nbf` and `iat`"
    )
    jwks_timeout_seconds: float = Field(
        default=3.0, gt=0, description="time limit of one fetch of the issuer's keys"
    )
    jwks_cache_seconds: float = Field(
        default=3600.0, gt=0, description="how long fetched keys are used before a re-fetch"
    )
    jwks_refetch_seconds: float = Field(
        default=30.0,
        ge=0,
        description="least time between fetches a token with an unknown `kid` causes (a key "
        "rotation is seen within it; a flood of made-up `kid`s costs one fetch per period)",
    )

    @property
    def jwks_endpoint(self) -> str:
        return self.jwks_url or f"{self.issuer.rstrip('/')}/.well-known/jwks.json"


class WorkerFleetSettings(BaseModel):
    """Where the worker fleet answers, for ``/ops/workers`` (``WORKER__...``, from the infra).

    Nested as ``worker``: ``WORKER__DISCOVERY_NAME`` (Cloud Map's multivalue name, one address
    per running task; compose: the worker's network alias) and ``WORKER__ALB_URL`` (the internal
    load balancer's base URL; compose: the same alias).
    """

    model_config = ConfigDict(frozen=True)

    discovery_name: str = Field(
        min_length=1, description="DNS name answering every worker task's address"
    )
    alb_url: str = Field(min_length=1, description="the internal ALB in front of the workers")
    port: int = Field(default=8080, gt=0, le=65535, description="the workers' HTTP port")
    timeout_seconds: float = Field(
        default=1.0,
        gt=0,
        le=10,
        description="time limit of the name lookup and of each call (connect and read); the "
        "calls run concurrently, so the view answers within about twice this",
    )


def _in_development(settings: dict[str, Any]) -> bool:
    return bool(settings.get("app_env") == DEVELOPMENT)


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
    auth: AuthSettings
    worker: WorkerFleetSettings | None = Field(
        default=None, description="the worker fleet's addresses; unset, /ops/workers answers 503"
    )
    docs_enabled: bool = Field(
        default_factory=_in_development,
        description="serve /docs, /redoc and /openapi.json (default: only in development)",
    )
    demo_job_types: bool | None = Field(
        default=None,
        description="accept the example types `sleep` and `fail` (they exist to show long runs "
        "and failures); default: only when APP_ENV is development",
    )

    @property
    def job_types(self) -> frozenset[str]:
        """The job types intake accepts (any other is answered 422 as unknown)."""
        demo = self.is_development if self.demo_job_types is None else self.demo_job_types
        return frozenset(JOB_TYPES.names(demo=demo))


class Flags(BaseModel):
    """Feature flags: ``/{app}/{env}/api/flags/{name}`` (or ``.../shared/flags/{name}``).

    ``accept_jobs``: ``false`` pauses job intake: ``POST /jobs`` answers 503 ``intake_paused``
    (with Retry-After) while reads go on, e.g. during a database migration or a worker incident,
    without a deploy. Takes effect within ``flags_ttl_seconds``.
    """

    accept_jobs: bool = True
