"""Parameter Store: the one reader of a path, and the pydantic-settings source built on it.

A service reads two paths: ``/{app}/{env}/shared/`` and ``/{app}/{env}/{service}/`` (the service
path wins). Parameter names relative to the path map onto fields case-insensitively (``-`` read
as ``_``), and each further ``/`` goes one nested model deeper (``database/pool-size`` ->
``database.pool_size``).
Parameters under ``flags/`` are feature flags (:mod:`servicekit.flags`, which reads them with
:func:`read_path` too), not settings.

The source is pydantic-settings' own environment source with one change, where the names and
values come from: nested names, JSON values and type conversion stay pydantic-settings' work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError
from pydantic_settings import EnvSettingsSource
from pydantic_settings.sources.utils import InitState, parse_env_vars

from servicekit import aws
from servicekit.errors import ConfigurationError

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

__all__ = [
    "FLAGS_SEGMENT",
    "PAGE_SIZE",
    "Parameter",
    "ParameterStoreSource",
    "parameter_paths",
    "read_path",
]

FLAGS_SEGMENT = "flags"
# The largest page GetParametersByPath allows: N parameters cost ceil(N / 10) calls per path.
PAGE_SIZE = 10


def parameter_paths(app: str, env: str, service: str) -> tuple[str, str]:
    """The two paths a service reads its settings from, highest precedence first."""
    return f"/{app}/{env}/{service}", f"/{app}/{env}/shared"


class Parameter(NamedTuple):
    name: str  # the full name, for messages
    value: str  # decrypted; a StringList is its comma-separated text
    type: str  # String, StringList or SecureString


def read_path(
    path: str, *, recursive: bool, budget: aws.Budget | None = None
) -> dict[str, Parameter]:
    """Every parameter under ``path`` (decrypted, every page) by name relative to ``path``.

    Raises botocore's errors; the caller knows whether to fail or to keep what it had.
    """
    path = path.rstrip("/")
    prefix = f"{path}/"
    pages = (
        aws.client("ssm", budget=budget)
        .get_paginator("get_parameters_by_path")
        .paginate(
            Path=path,
            Recursive=recursive,
            WithDecryption=True,
            PaginationConfig={"PageSize": PAGE_SIZE},
        )
    )
    return {
        parameter["Name"].removeprefix(prefix): Parameter(
            parameter["Name"], parameter.get("Value", ""), parameter.get("Type", "String")
        )
        for page in pages
        for parameter in page.get("Parameters", [])
    }


class ParameterStoreSource(EnvSettingsSource):
    """Settings read from Parameter Store ``paths`` (highest precedence first).

    Reads happen once, when the source is built; an AWS failure on any path raises one
    :class:`ConfigurationError` naming every path that failed, so nothing starts on a partial read.
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        paths: Sequence[str],
        *,
        _init_state: InitState | None = None,
    ) -> None:
        self.paths = tuple(path.rstrip("/") for path in paths)
        # The parameter behind each key, so an error can name the one an invalid value came from.
        self.names: dict[str, str] = {}
        super().__init__(
            settings_cls,
            env_prefix="",
            env_nested_delimiter="/",
            env_ignore_empty=False,
            _init_state=_init_state,
        )

    def _load_env_vars(self) -> Mapping[str, str | None]:
        values: dict[str, str | None] = {}
        problems: list[str] = []
        # Lowest precedence first, so that a service parameter replaces the shared one.
        for path in reversed(self.paths):
            try:
                found = self._read(path)
            except (BotoCoreError, ClientError) as error:
                problems.append(aws.describe_error(error, service="ssm", resource=path))
            else:
                for relative, value in found.items():
                    # Kebab case is usual in Parameter Store names; field names are snake case.
                    name = relative.replace("-", "_")
                    values[name] = value
                    self.names[name if self.case_sensitive else name.lower()] = f"{path}/{relative}"
        if problems:
            raise ConfigurationError(*problems)
        return parse_env_vars(
            values, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )

    @staticmethod
    def _read(path: str) -> dict[str, str]:
        """Every parameter under ``path`` but its flags, by name relative to ``path``."""
        return {
            relative: parameter.value
            for relative, parameter in read_path(path, recursive=True).items()
            if not relative.startswith(f"{FLAGS_SEGMENT}/")
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(paths={self.paths!r})"
