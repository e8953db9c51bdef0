"""Service settings: init arguments, environment, ``.env`` (development), Parameter Store, defaults.

Services subclass :class:`ServiceSettings`, add fields, and build their settings once at start-up
with :meth:`ServiceSettings.load`. Environment variables are the upper-case field names (nested
models joined by ``__``: ``DATABASE__POOL_SIZE``); ECS task-definition ``secrets`` arrive the same
way. Parameter Store names are described in :mod:`servicekit.parameters`. A field typed
:class:`SecretRef` holds a Secrets Manager secret id whose value is read through the shared
rotation-aware cache, never stored in the settings.

:meth:`~ServiceSettings.load` fails with one :class:`~servicekit.errors.ConfigurationError` that
lists every missing or invalid setting with where it was looked for, every secret that cannot be
read, every placeholder secret outside development (:func:`is_placeholder`), and what a subclass's
``_problems`` refuses (a database without verified TLS, :mod:`servicekit.db`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Generic, Self, TypeVar, cast, get_args

from pydantic import (
    BaseModel,
    GetCoreSchemaHandler,
    SecretStr,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import CoreSchema, ErrorDetails, core_schema
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from servicekit.errors import ConfigurationError
from servicekit.logging import register_secret
from servicekit.parameters import ParameterStoreSource, parameter_paths
from servicekit.secrets import SecretUnavailable, default_cache

__all__ = [
    "DEVELOPMENT",
    "LOCAL_ONLY_SUFFIX",
    "PLACEHOLDER_SECRETS",
    "RdsSecret",
    "SecretRef",
    "ServiceSettings",
    "is_placeholder",
]

logger = logging.getLogger(__name__)

DEVELOPMENT = "development"
# Values left in from a template or an example; refused as secrets outside development.
PLACEHOLDER_SECRETS = frozenset(
    {"changeme", "change-me", "change_me", "changethis", "password", "secret", "placeholder", "xxx"}
)
# How docker-compose.yml's local secrets end (postgres-local-only, app-local-only): a value that
# leaked from the local topology into a real environment.
LOCAL_ONLY_SUFFIX = "-local-only"


def is_placeholder(secret: str) -> bool:
    """Whether ``secret`` is a template's or the local topology's value, not a real secret."""
    value = secret.strip().lower()
    return value in PLACEHOLDER_SECRETS or value.endswith(LOCAL_ONLY_SUFFIX)


M = TypeVar("M")

FieldPath = tuple[str, ...]


class RdsSecret(BaseModel):
    """The JSON Secrets Manager keeps for an RDS database."""

    engine: str = "postgres"
    host: str
    port: int = 5432
    username: str
    password: SecretStr
    dbname: str


class SecretRef(Generic[M]):
    """A Secrets Manager secret id; :meth:`get` reads the value through the shared cache.

    ``SecretRef[RdsSecret]`` parses a JSON secret into the model, ``SecretRef[str]`` returns the
    secret string. Settings hold only the id, so no value can leak through a ``repr`` or a dump.
    """

    __slots__ = ("model", "secret_id")

    def __init__(self, secret_id: str, model: type[M]) -> None:
        self.secret_id = secret_id
        self.model = model

    def get(self) -> M:
        """The current value (cached, rotation-aware)."""
        cache = default_cache()
        if self.model is str:
            return cast(M, cache.get(self.secret_id))
        return cast(M, cache.get_model(self.secret_id, cast(type[BaseModel], self.model)))

    def refresh(self) -> M:
        """Check for a new version now (the old credentials were refused), then :meth:`get`."""
        default_cache().refresh(self.secret_id)
        return self.get()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.secret_id!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretRef):
            return NotImplemented
        return (self.secret_id, self.model) == (other.secret_id, other.model)

    def __hash__(self) -> int:
        return hash((self.secret_id, self.model))

    def __class_getitem__(cls, model: Any) -> Any:
        # pydantic-settings JSON-decodes a value from the environment or Parameter Store for any
        # field whose type brings its own pydantic schema; NoDecode keeps the id a plain string.
        # (The ignore: typeshed gives Generic no __class_getitem__.)
        return Annotated[super().__class_getitem__(model), NoDecode]  # type: ignore[misc]

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        model: Any = next(iter(get_args(source)), str)
        return core_schema.no_info_after_validator_function(
            lambda secret_id: cls(secret_id, model),
            core_schema.str_schema(min_length=1, strip_whitespace=True),
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda ref: ref.secret_id
            ),
        )


class ServiceSettings(BaseSettings):
    """The settings every service has; subclass it to add the service's own."""

    model_config = SettingsConfigDict(
        extra="ignore",
        env_file=".env",
        env_nested_delimiter="__",
        hide_input_in_errors=True,
    )

    app_name: str
    app_env: str = DEVELOPMENT
    service_name: str
    aws_region: str | None = None
    log_level: str = "INFO"
    tracing_enabled: bool = False
    otel_exporter_otlp_endpoint: str | None = None
    # Off only for local runs and tests without AWS.
    parameter_store_enabled: bool = True

    @property
    def is_development(self) -> bool:
        return self.app_env == DEVELOPMENT

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """Build the settings from every source, or raise one error naming every problem."""
        sources, init_kwargs = cls._settings_init_sources(_init_kwargs=overrides)
        lookup = _Lookup(sources)
        try:
            settings = cls(_build_sources=(sources, init_kwargs))
        except ValidationError as error:
            # from None: the original error would print the rejected values in a traceback.
            details = error.errors(include_url=False, include_context=False, include_input=False)
            raise ConfigurationError(*map(lookup.describe, details)) from None
        except SettingsError as error:
            raise ConfigurationError(str(error)) from None
        problems = settings._problems(lookup)
        if problems:
            raise ConfigurationError(*problems)
        return settings

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The Parameter Store paths depend on settings, so they are read from the sources above.
        explicit = (init_settings, env_settings)
        local: tuple[PydanticBaseSettingsSource, ...] = explicit
        if _raw_value(settings_cls, "app_env", explicit) == DEVELOPMENT:
            local = (*explicit, dotenv_settings)
        app = _raw_value(settings_cls, "app_name", local)
        env = _raw_value(settings_cls, "app_env", local)
        service = _raw_value(settings_cls, "service_name", local)
        paths: Sequence[str] = ()
        if app and env and service and _enabled(settings_cls, local):
            paths = parameter_paths(str(app), str(env), str(service))
        store = ParameterStoreSource(settings_cls, paths, _init_state=init_settings._init_state)
        return (*local, store)

    def _problems(self, lookup: _Lookup) -> list[str]:
        """What refuses these valid settings at start-up; subclasses add their own checks."""
        return self._secret_problems(lookup)

    def _secret_problems(self, lookup: _Lookup) -> list[str]:
        """Read every secret now and refuse placeholder secrets outside development."""
        problems: list[str] = []
        secrets: list[tuple[FieldPath, str, str]] = []  # path, value, where it came from
        for path, value in _walk(self):
            if isinstance(value, SecretStr):
                # Values from the cache are registered there; these came from env or SSM.
                register_secret(value.get_secret_value())
                secrets.append((path, value.get_secret_value(), lookup.origin(path)))
            elif isinstance(value, SecretRef):
                try:
                    resolved = value.get()
                except SecretUnavailable as error:
                    problems.append(f"{_dotted(path)}: {error} (id from {lookup.origin(path)})")
                    continue
                where = f"secret {value.secret_id!r}"
                if isinstance(resolved, BaseModel):
                    secrets.extend(
                        (inner_path, inner.get_secret_value(), where)
                        for inner_path, inner in _walk(resolved, path)
                        if isinstance(inner, SecretStr)
                    )
                elif isinstance(resolved, str):
                    secrets.append((path, resolved, where))
        for path, secret, origin in secrets:
            if not is_placeholder(secret):
                continue
            if self.is_development:
                logger.warning("%s holds a placeholder secret (%s)", _dotted(path), origin)
            else:
                problems.append(
                    f"{_dotted(path)}: a placeholder secret is refused outside development"
                    f" ({origin})"
                )
        return problems


class _Lookup:
    """Where a setting is looked for and where a value came from, for error messages."""

    def __init__(self, sources: Sequence[object]) -> None:
        self.sources = [
            source
            for source in sources
            if isinstance(source, InitSettingsSource | EnvSettingsSource)
        ]

    def describe(self, detail: ErrorDetails) -> str:
        path = _field_path(detail["loc"])
        if detail["type"] == "missing":
            return f"{_dotted(path)}: missing; looked for {', '.join(self.places(path))}"
        return f"{_dotted(path)}: {detail['msg']} (from {self.origin(path)})"

    def places(self, path: FieldPath) -> list[str]:
        """Every place a value for ``path`` is looked for, highest precedence first."""
        places: list[str] = []
        for source in self.sources:
            if isinstance(source, ParameterStoreSource):
                places.extend(f"SSM parameter {prefix}/{'/'.join(path)}" for prefix in source.paths)
            elif isinstance(source, DotEnvSettingsSource):
                if source.env_file is not None:
                    places.append(f"{_env_key(source, path).upper()} in the .env file")
            elif isinstance(source, EnvSettingsSource):
                places.append(f"environment variable {_env_key(source, path).upper()}")
        return places

    def origin(self, path: FieldPath) -> str:
        """The place the value for ``path`` came from."""
        for source in self.sources:
            if isinstance(source, InitSettingsSource):
                if path and path[0] in source.init_kwargs:
                    return f"init argument {path[0]}"
                continue
            keys = (_env_key(source, path[:length]) for length in range(len(path), 0, -1))
            key = next((key for key in keys if key in source.env_vars), None)
            if key is None:
                continue
            if isinstance(source, ParameterStoreSource):
                return f"SSM parameter {source.names[key]}"
            if isinstance(source, DotEnvSettingsSource):
                return f"{key.upper()} in the .env file"
            return f"environment variable {key.upper()}"
        return "field default"


def _env_key(source: EnvSettingsSource, path: FieldPath) -> str:
    key = source.env_prefix + (source.env_nested_delimiter or "__").join(path)
    return key if source.case_sensitive else key.lower()


def _raw_value(
    settings_cls: type[BaseSettings], name: str, sources: Sequence[PydanticBaseSettingsSource]
) -> Any:
    """The unvalidated value of a base field, before the settings exist."""
    field = settings_cls.model_fields[name]
    for source in sources:
        value: Any = None
        if isinstance(source, InitSettingsSource):
            value = source.init_kwargs.get(name)
        elif isinstance(source, EnvSettingsSource):
            value, _, _ = source.get_field_value(field, name)
        if value is not None:
            return value
    return None if field.is_required() else field.default


def _enabled(
    settings_cls: type[BaseSettings], sources: Sequence[PydanticBaseSettingsSource]
) -> bool:
    raw = _raw_value(settings_cls, "parameter_store_enabled", sources)
    try:
        return TypeAdapter(bool).validate_python(raw)
    except ValidationError:
        # Validating the settings reports the bad value; reading stays the safe default.
        return True


def _walk(model: BaseModel, prefix: FieldPath = ()) -> Iterator[tuple[FieldPath, object]]:
    """Every leaf value of ``model`` with its field path, nested models included."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _walk(value, (*prefix, name))
        else:
            yield (*prefix, name), value


def _field_path(loc: tuple[int | str, ...]) -> FieldPath:
    # Union members appear in a location as tags such as "function-after[...]": not field names.
    return tuple(part for part in loc if isinstance(part, str) and part.isidentifier())


def _dotted(path: FieldPath) -> str:
    return ".".join(path) or "settings"
