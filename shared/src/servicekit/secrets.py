"""A rotation-aware, thread-safe runtime cache for Secrets Manager secrets.

Code reads a secret through :meth:`SecretCache.get` every time it needs it instead of keeping the
value: that is what lets a rotation reach a running task. So a cached read is only a dict lookup
and a clock compare: no lock, no copy, no logging.

- Each entry is checked again after ``ttl`` seconds, shortened by up to ``jitter`` of it so tasks
  that started together do not all call AWS together.
- A check is a DescribeSecret: GetSecretValue runs again only when the AWSCURRENT stage moved to
  another version. Values are always read with ``VersionStage="AWSCURRENT"`` explicitly.
- One thread checks an entry at a time; meanwhile the others keep serving the current value.
- :meth:`SecretCache.refresh` forces a check, for a caller that just saw an authentication failure.
- When a check fails (AWS unreachable, throttled, denied) the last good value is served, a warning
  says so, and the next check is tried after ``min(ttl, 30 s)``. A secret never fetched raises
  :class:`SecretUnavailable` instead.
- Every value fetched (and every ``SecretStr`` inside a model parsed from one) is registered with
  :func:`servicekit.logging.register_secret`, so log lines redact it.

IAM: ``secretsmanager:GetSecretValue`` and ``secretsmanager:DescribeSecret`` on the secret (and
``kms:Decrypt`` on its key when it is a customer-managed one).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar, cast

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, SecretStr, ValidationError

from servicekit import aws
from servicekit.logging import register_secret

__all__ = ["SecretCache", "SecretUnavailable", "default_cache", "validation_problems"]

M = TypeVar("M", bound=BaseModel)

_CURRENT = "AWSCURRENT"
# A failed check costs its caller the connect timeouts and retries, so during an outage the last
# good value is served this long before AWS is tried again (refresh() still tries at once).
_RETRY_AFTER_FAILURE = 30.0

_log = logging.getLogger(__name__)


class SecretUnavailable(Exception):
    """A secret could not be read and no earlier value exists. Names the id, never a value."""

    def __init__(self, secret_id: str, reason: str) -> None:
        super().__init__(f"secret {secret_id!r} is unavailable: {reason}")
        self.secret_id = secret_id
        self.reason = reason


class _Entry:
    """One secret as last verified. Replaced whole on every check, so readers need no lock."""

    __slots__ = ("expires", "models", "value", "verified", "version_id")

    def __init__(
        self,
        value: str,
        version_id: str,
        models: dict[type[BaseModel], BaseModel],
        *,
        verified: float,
        expires: float,
    ) -> None:
        self.value = value
        self.version_id = version_id
        # Parsed models belong to one version: a new version starts with an empty dict.
        self.models = models
        self.verified = verified
        self.expires = expires


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
        if ttl <= 0 or not 0 <= jitter < 1:
            raise ValueError("ttl must be positive and jitter in [0, 1)")
        self._ttl = ttl
        self._jitter = jitter
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def get(self, secret_id: str) -> str:
        """The AWSCURRENT SecretString (from the cache unless the TTL passed)."""
        entry = self._entries.get(secret_id)
        if entry is not None and entry.expires > self._clock():
            return entry.value
        return self._check_once(secret_id, entry, wait=entry is None).value

    def get_model(self, secret_id: str, model: type[M]) -> M:
        """The secret's JSON parsed into ``model``, parsed and validated once per version."""
        entry = self._entries.get(secret_id)
        if entry is None or entry.expires <= self._clock():
            entry = self._check_once(secret_id, entry, wait=entry is None)
        parsed = entry.models.get(model)
        if parsed is None:
            parsed = entry.models[model] = _parse(secret_id, entry.value, model)
        return cast("M", parsed)

    def refresh(self, secret_id: str) -> str:
        """Check the secret now (after an authentication failure) and return the current value."""
        return self._check_once(secret_id, self._entries.get(secret_id), wait=True).value

    def _lock_for(self, secret_id: str) -> threading.Lock:
        lock = self._locks.get(secret_id)
        if lock is None:
            with self._locks_guard:
                lock = self._locks.setdefault(secret_id, threading.Lock())
        return lock

    def _check_once(self, secret_id: str, seen: _Entry | None, *, wait: bool) -> _Entry:
        """Check ``secret_id`` unless another thread replaced ``seen`` meanwhile.

        Without ``wait``, a busy lock means another thread is checking: ``seen`` is served.
        """
        lock = self._lock_for(secret_id)
        if not lock.acquire(blocking=wait):
            assert seen is not None, "only a cached entry may be served without waiting"
            return seen
        try:
            current = self._entries.get(secret_id)
            if current is not None and current is not seen:
                return current
            entry = self._check(secret_id, current)
            self._entries[secret_id] = entry
            return entry
        finally:
            lock.release()

    def _check(self, secret_id: str, current: _Entry | None) -> _Entry:
        client = aws.client("secretsmanager")
        now = self._clock()
        try:
            if current is not None:
                stages = client.describe_secret(SecretId=secret_id).get("VersionIdsToStages", {})
                if _CURRENT in stages.get(current.version_id, []):
                    return self._entry(current.value, current.version_id, current.models, now)
            response = client.get_secret_value(SecretId=secret_id, VersionStage=_CURRENT)
        except (BotoCoreError, ClientError) as error:
            reason = aws.describe_error(error, service="secretsmanager", resource=secret_id)
            if current is None:
                raise SecretUnavailable(secret_id, reason) from error
            _log.warning(
                "secret %s could not be checked; serving the last good value "
                "(version %s, verified %.0f s ago): %s",
                secret_id,
                current.version_id,
                now - current.verified,
                reason,
            )
            return _Entry(
                current.value,
                current.version_id,
                current.models,
                verified=current.verified,
                expires=now + self._jittered(min(self._ttl, _RETRY_AFTER_FAILURE)),
            )
        value = response.get("SecretString")
        if value is None:
            raise SecretUnavailable(secret_id, "it holds SecretBinary; only SecretString is read")
        register_secret(value)
        return self._entry(value, response["VersionId"], {}, now)

    def _entry(
        self, value: str, version_id: str, models: dict[type[BaseModel], BaseModel], now: float
    ) -> _Entry:
        return _Entry(
            value, version_id, models, verified=now, expires=now + self._jittered(self._ttl)
        )

    def _jittered(self, seconds: float) -> float:
        # Jitter only shortens: `ttl` stays the upper bound on how stale a value can be.
        return seconds * (1 - self._jitter * random.random())  # noqa: S311 - spread, not crypto


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
