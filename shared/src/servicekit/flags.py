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
returns the flags it holds and starts one background re-read of both paths
(:func:`servicekit.parameters.read_path`), which later calls see. So a request that reads a flag
costs a dict lookup even while Parameter Store does not answer. Only the very first read (at
start-up, before any request) waits, bounded by :data:`BUDGET`. A missing flag takes its declared
default. A value that does not parse keeps the flag's previous value (or default) and logs a
warning naming the parameter. While Parameter Store cannot be read, the last good flags (the
declared defaults if none were ever read) are served, a warning is logged, and the read is
retried after ``min(ttl, 30 s)``: :class:`servicekit.cache.RefreshingCache`'s work, shared with
the secret cache.

IAM: ``ssm:GetParametersByPath`` on both paths (and ``kms:Decrypt`` for SecureString flags).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, TypeAdapter, ValidationError

from servicekit import aws
from servicekit.cache import RefreshingCache, Unavailable
from servicekit.parameters import FLAGS_SEGMENT, parameter_paths, read_path
from servicekit.secrets import validation_problems

__all__ = ["BUDGET", "FeatureFlags"]

F = TypeVar("F", bound=BaseModel)

BUDGET = aws.Budget(connect_timeout=1.0, read_timeout=2.0, max_attempts=2)
"""Parameter Store calls of the flags: a read that cannot finish in a few seconds keeps the
last good flags rather than holding a start-up (or a refresh thread) for the default budget."""

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
        self._model = model
        # Lowest precedence first, so that the service's flag replaces the shared one.
        self.paths = tuple(
            f"{path}/{FLAGS_SEGMENT}" for path in reversed(parameter_paths(app, env, service))
        )
        self._key = f"feature flags {' and '.join(self.paths)}"
        self._adapters: dict[str, TypeAdapter[Any]] = {
            # Each field's own type and constraints, so one bad flag cannot spoil the others.
            name: TypeAdapter(field.rebuild_annotation())
            for name, field in model.model_fields.items()
        }
        self._cache = RefreshingCache(
            self._load,
            ttl=ttl,
            background=True,
            fallback=lambda _: model(),  # the declared defaults
            clock=clock,
        )

    def get(self) -> F:
        """The current flags; once the TTL passed, a background re-read is started."""
        return self._cache.get(self._key)

    def _load(self, key: str, previous: F | None) -> F:
        try:
            found = self._read()
        except (BotoCoreError, ClientError) as error:
            raise Unavailable(
                key, aws.describe_error(error, service="ssm", resource=" and ".join(self.paths))
            ) from error
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
            return self._model.model_validate(values, by_name=True)
        except ValidationError as error:
            _log.warning(
                "feature flags from %s are not valid together (%s); keeping the %s",
                " and ".join(self.paths),
                validation_problems(error),
                "previous flags" if previous is not None else "defaults",
            )
            return self._model() if previous is None else previous

    def _read(self) -> dict[str, tuple[str, str | list[str]]]:
        """Field name -> (parameter name, raw value); the service path read last, so it wins."""
        fields = {name.lower(): name for name in self._model.model_fields}
        found: dict[str, tuple[str, str | list[str]]] = {}
        for path in self.paths:
            for relative, parameter in read_path(path, recursive=False, budget=BUDGET).items():
                field = fields.get(relative.lower().replace("-", "_"))
                if field is not None:
                    value = parameter.value
                    raw = value.split(",") if parameter.type == "StringList" else value
                    found[field] = (parameter.name, raw)
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
