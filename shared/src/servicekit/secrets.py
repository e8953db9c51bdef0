"""A rotation-aware, thread-safe runtime cache for Secrets Manager secrets.

Code reads a secret through :meth:`SecretCache.get` every time it needs it instead of keeping the
value: that is what lets a rotation reach a running task. The expiry, jitter, one-check-at-a-time
and serving of the last good value during an outage are :class:`servicekit.cache.RefreshingCache`'s
(``ttl`` 300 s by default); what is the secrets' own:

- A check is a DescribeSecret: GetSecretValue runs again only when the AWSCURRENT stage moved to
  another version. Values are always read with ``VersionStage="AWSCURRENT"`` explicitly.
- :meth:`SecretCache.refresh` forces a check, for a caller that just saw an authentication failure.
- A secret never fetched raises :class:`SecretUnavailable` when it cannot be read.
- Every value fetched (and every ``SecretStr`` inside a model parsed from one) is registered with
  :func:`servicekit.logging.register_secret`, so log lines redact it.

IAM: ``secretsmanager:GetSecretValue`` and ``secretsmanager:DescribeSecret`` on the secret (and
``kms:Decrypt`` on its key when it is a customer-managed one).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar, cast

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, SecretStr, ValidationError

from servicekit import aws
from servicekit.cache import RefreshingCache, Unavailable
from servicekit.logging import register_secret

__all__ = ["SecretCache", "SecretUnavailable", "default_cache", "validation_problems"]

M = TypeVar("M", bound=BaseModel)

_CURRENT = "AWSCURRENT"


class SecretUnavailable(Unavailable):
    """A secret could not be read and no earlier value exists. Names the id, never a value."""

    def __init__(self, secret_id: str, reason: str) -> None:
        super().__init__(f"secret {secret_id!r}", reason)
        self.secret_id = secret_id


class _Version:
    """One version of a secret, with the models parsed from it (a new version starts empty)."""

    __slots__ = ("models", "value", "version_id")

    def __init__(self, value: str, version_id: str) -> None:
        self.value = value
        self.version_id = version_id
        self.models: dict[type[BaseModel], BaseModel] = {}


class SecretCache:
    """Secrets Manager values by secret id (name or ARN), checked again after a jittered TTL.

    ``clock`` (a monotonic clock in seconds) is injectable so tests can move time.
    """

    def __init__(
        self,
        *,
        ttl: float = 300.0,
        jitter: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._versions = RefreshingCache(_check, ttl=ttl, jitter=jitter, clock=clock)

    def get(self, secret_id: str) -> str:
        """The AWSCURRENT SecretString (from the cache unless the TTL passed)."""
        return self._versions.get(secret_id).value

    def get_model(self, secret_id: str, model: type[M]) -> M:
        """The secret's JSON parsed into ``model``, parsed and validated once per version."""
        version = self._versions.get(secret_id)
        parsed = version.models.get(model)
        if parsed is None:
            parsed = version.models[model] = _parse(secret_id, version.value, model)
        return cast("M", parsed)

    def refresh(self, secret_id: str) -> str:
        """Check the secret now (after an authentication failure) and return the current value."""
        return self._versions.refresh(secret_id).value


def _check(secret_id: str, current: _Version | None) -> _Version:
    """``current`` while it is still AWSCURRENT, else the version that is."""
    client = aws.client("secretsmanager")
    try:
        if current is not None:
            stages = client.describe_secret(SecretId=secret_id).get("VersionIdsToStages", {})
            if _CURRENT in stages.get(current.version_id, []):
                return current
        response = client.get_secret_value(SecretId=secret_id, VersionStage=_CURRENT)
    except (BotoCoreError, ClientError) as error:
        reason = aws.describe_error(error, service="secretsmanager", resource=secret_id)
        raise SecretUnavailable(secret_id, reason) from error
    value = response.get("SecretString")
    if value is None:
        raise SecretUnavailable(secret_id, "it holds SecretBinary; only SecretString is read")
    register_secret(value)
    return _Version(value, response["VersionId"])


def _parse(secret_id: str, value: str, model: type[M]) -> M:
    try:
        parsed = model.model_validate_json(value)
    except ValidationError as error:
        raise SecretUnavailable(
            secret_id, f"its value is not a valid {model.__name__}: {validation_problems(error)}"
        ) from None
    _register_secret_fields(parsed)
    return parsed


def validation_problems(error: ValidationError) -> str:
    """Where and why validation failed, without the input (pydantic's message quotes it)."""
    return "; ".join(
        f"{'.'.join(map(str, problem['loc'])) or 'value'}: {problem['msg']}"
        for problem in error.errors(include_input=False, include_url=False)
    )


def _register_secret_fields(value: object) -> None:
    if isinstance(value, SecretStr):
        register_secret(value.get_secret_value())
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _register_secret_fields(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            _register_secret_fields(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _register_secret_fields(item)


_default: SecretCache | None = None
_default_lock = threading.Lock()


def default_cache() -> SecretCache:
    """The process-wide cache (created on first use; ``SecretRef`` reads through it)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = SecretCache()
    return _default
