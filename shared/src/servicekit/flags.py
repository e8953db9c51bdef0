"""Feature flags from Parameter Store: typed, refreshed on a TTL, no restart needed.

Layout: one parameter per flag, beside the service's settings::

    /{app}/{env}/shared/flags/{name}      every service of the environment
    /{app}/{env}/{service}/flags/{name}   this service only; wins over the shared one

``{name}`` is the flag's field name, case-insensitive, ``-`` read as ``_``
(``/suite/dev/api/flags/new-checkout`` sets ``new_checkout``). The value is text as pydantic reads
it (``true``/``false``, ``42``, ``0.25``, any string), JSON for a list, dict or model field, or a
StringList for a list field. Parameters naming no field are ignored. Settings ignore ``flags/``.

A service declares its flags as a pydantic model in which every field has a default::

    class Flags(BaseModel):
        new_checkout: bool = False
        batch_size: int = 10

    flags = FeatureFlags(Flags, app="suite", env="dev", service="api")
    if flags.get().new_checkout: ...

:meth:`FeatureFlags.get` never waits on Parameter Store once the flags were read: after ``ttl`` it
returns the flags it holds and starts one background re-read of both paths (GetParametersByPath,
paged, with decryption), which later calls see. So a request that reads a flag costs a dict
lookup even while Parameter Store does not answer. Only the very first read (at start-up, before
any request) waits, bounded by :data:`BUDGET`. A missing flag takes its declared
default. A value that does not parse keeps the flag's previous value (or default) and logs a
warning naming the parameter. While Parameter Store cannot be read, the last known good flags
(the defaults if none were ever read) are served, a warning is logged, and the read is retried
after ``min(ttl, 30 s)``.

IAM: ``ssm:GetParametersByPath`` on both paths (and ``kms:Decrypt`` for SecureString flags).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, TypeAdapter, ValidationError

from servicekit import aws
from servicekit.secrets import validation_problems

__all__ = ["BUDGET", "FeatureFlags"]

F = TypeVar("F", bound=BaseModel)

_RETRY_AFTER_FAILURE = 30.0
BUDGET = aws.Budget(connect_timeout=1.0, read_timeout=2.0, max_attempts=2)
"""Parameter Store calls of the flags: a read that cannot finish in a few seconds keeps the
last good flags rather than holding a start-up (or a refresh thread) for the default budget."""
_JITTER = 0.1

_log = logging.getLogger(__name__)


class FeatureFlags(Generic[F]):
    """The typed flags of one service, read from Parameter Store and kept for ``ttl`` seconds.

    ``clock`` (a monotonic clock in seconds) is injectable so tests can move time.
    """

    def __init__(
        self,
        model: type[F],
        *,
        app: str,
        env: str,
        service: str,
        ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        required = [name for name, field in model.model_fields.items() if field.is_required()]
        if required:
            raise TypeError(f"{model.__name__}: every flag needs a default; missing: {required}")
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._model = model
        self._ttl = ttl
        self._clock = clock
        self.paths = (f"/{app}/{env}/shared/flags", f"/{app}/{env}/{service}/flags")
        self._adapters: dict[str, TypeAdapter[Any]] = {
            # Each field's own type and constraints, so one bad flag cannot spoil the others.
            name: TypeAdapter(field.rebuild_annotation())
            for name, field in model.model_fields.items()
        }
        self._current: tuple[F, float] | None = None
        self._lock = threading.Lock()

    def get(self) -> F:
        """The current flags; once the TTL passed, a background re-read is started."""
        current = self._current
        if current is None:
            return self._first_read()
        if current[1] <= self._clock() and self._lock.acquire(blocking=False):
            # The lock is released by the thread, after its read.
            try:
                threading.Thread(
                    target=self._refresh, args=(current,), name="flags-refresh", daemon=True
                ).start()
            except BaseException:
                self._lock.release()
                raise
        return current[0]

    def _first_read(self) -> F:
        with self._lock:
            if self._current is None:
                self._store(self._load(None))
            assert self._current is not None
            return self._current[0]

    def _refresh(self, seen: tuple[F, float]) -> None:
        try:
            if self._current is seen:
                self._store(self._load(seen[0]))
        finally:
            self._lock.release()

    def _store(self, loaded: tuple[F, float]) -> None:
        flags, ttl = loaded
        jittered = ttl * (1 - _JITTER * random.random())  # noqa: S311 - spread, not crypto
        self._current = (flags, self._clock() + jittered)

    def _load(self, previous: F | None) -> tuple[F, float]:
        try:
            found = self._read()
        except (BotoCoreError, ClientError) as error:
            reason = aws.describe_error(error, service="ssm", resource=" and ".join(self.paths))
            _log.warning(
                "feature flags could not be read; serving the %s: %s",
                "last known good flags" if previous is not None else "declared defaults",
                reason,
            )
            return self._model() if previous is None else previous, min(
                self._ttl, _RETRY_AFTER_FAILURE
            )
        values: dict[str, Any] = {}
        for field, (parameter, raw) in found.items():
            try:
                values[field] = self._convert(field, raw)
            except ValidationError as error:
                _log.warning(
                    "feature flag %s is not a valid %s (%s); keeping its %s",
                    parameter,
                    field,
                    validation_problems(error),
                    "previous value" if previous is not None else "default",
                )
                if previous is not None:
                    values[field] = getattr(previous, field)
        try:
            return self._model.model_validate(values, by_name=True), self._ttl
        except ValidationError as error:
            _log.warning(
                "feature flags from %s are not valid together (%s); keeping the %s",
                " and ".join(self.paths),
                validation_problems(error),
                "previous flags" if previous is not None else "defaults",
            )
            return self._model() if previous is None else previous, self._ttl

    def _read(self) -> dict[str, tuple[str, str | list[str]]]:
        """Field name -> (parameter name, raw value); the service path read last, so it wins."""
        fields = {name.lower(): name for name in self._model.model_fields}
        paginator = aws.client("ssm", budget=BUDGET).get_paginator("get_parameters_by_path")
        found: dict[str, tuple[str, str | list[str]]] = {}
        for path in self.paths:
            for page in paginator.paginate(Path=path, Recursive=False, WithDecryption=True):
                for parameter in page.get("Parameters", []):
                    name = parameter["Name"]
                    field = fields.get(name.rsplit("/", 1)[-1].lower().replace("-", "_"))
                    if field is not None:
                        value = parameter["Value"]
                        raw = value.split(",") if parameter["Type"] == "StringList" else value
                        found[field] = (name, raw)
        return found

    def _convert(self, field: str, raw: str | list[str]) -> Any:
        adapter = self._adapters[field]
        if isinstance(raw, list):
            return adapter.validate_python(raw)
        try:
            return adapter.validate_strings(raw)
        except ValidationError as error:
            # Lists, dicts and models arrive as JSON text; anything else was simply invalid.
            try:
                return adapter.validate_json(raw)
            except ValidationError:
                raise error from None
