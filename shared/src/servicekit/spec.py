"""The service spec: what a service folder declares about itself in ``service.toml``.

One small declarative file per service holds the figures that the container, docker compose and
the CDK app all need (CPU, memory, task count, port, health path, exposure, trigger, what it
reads), so none of them is written twice by hand: compose is checked against the specs by a
test, and the infra builds every service from its spec. Adding a folder under ``services/`` with
a ``service.toml`` adds a service.
"""

from __future__ import annotations

import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "Exposure",
    "ServiceSpec",
    "TaskSpec",
    "Trigger",
    "find_repository_root",
    "load_spec",
    "load_specs",
]

# Fargate's valid (CPU units -> memory MB) combinations, so a spec that ECS would reject fails
# here, at synthesis and in tests, instead of at deploy time.
_FARGATE_MEMORY: dict[int, range] = {
    256: range(512, 2048 + 1, 512),
    512: range(1024, 4096 + 1, 1024),
    1024: range(2048, 8192 + 1, 1024),
    2048: range(4096, 16384 + 1, 1024),
    4096: range(8192, 30720 + 1, 1024),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Exposure(StrEnum):
    EXTERNAL = "external"  # internet-facing ALB, HTTPS + WAF
    INTERNAL = "internal"  # internal ALB, reachable from the services' security groups
    NONE = "none"


class TaskSpec(_Strict):
    cpu: Annotated[int, Field(description="CPU units (1024 = 1 vCPU)")]
    memory: Annotated[int, Field(description="memory, MiB")]
    desired_count: Annotated[int, Field(ge=0)]
    stop_timeout: Annotated[
        int, Field(ge=2, le=120, description="ECS stopTimeout, s: SIGTERM to SIGKILL")
    ] = 30

    @model_validator(mode="after")
    def _fargate_size(self) -> Self:
        allowed = _FARGATE_MEMORY.get(self.cpu)
        if allowed is None:
            raise ValueError(f"cpu {self.cpu} is not a Fargate size ({sorted(_FARGATE_MEMORY)})")
        if self.memory not in allowed:
            raise ValueError(
                f"memory {self.memory} MiB does not fit cpu {self.cpu} on Fargate "
                f"({allowed.start}-{allowed.stop - 1} in steps of {allowed.step})"
            )
        return self


class HttpTrigger(_Strict):
    kind: Literal["http"]


class QueueTrigger(_Strict):
    kind: Literal["sqs"]
    queue: str
    max_receive_count: Annotated[int, Field(ge=1)] = 5
    visibility_timeout: Annotated[int, Field(ge=0, le=43200)] = 60


class ScheduleTrigger(_Strict):
    kind: Literal["schedule"]
    registry: Annotated[str, Field(description="module:attribute of the job registry")]


Trigger = Annotated[HttpTrigger | QueueTrigger | ScheduleTrigger, Field(discriminator="kind")]


class ConfigSpec(_Strict):
    """What the service reads, so its IAM role and task definition grant exactly that."""

    secrets: Annotated[
        dict[str, str],
        Field(description="env var -> secret name under {app}/{env}/ (its id is passed)"),
    ] = {}
    parameters: Annotated[
        list[str], Field(description="Parameter Store prefixes under /{app}/{env}/")
    ] = []
    environment: dict[str, str] = {}


class ServiceSpec(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$", max_length=32)]
    description: str = ""
    command: Annotated[list[str], Field(min_length=1, description="the container's command")]
    port: Annotated[int | None, Field(ge=1, le=65535)] = None
    health_path: str | None = None
    exposure: Exposure = Exposure.NONE
    task: TaskSpec
    trigger: Trigger
    config: ConfigSpec = ConfigSpec()

    @model_validator(mode="after")
    def _served(self) -> Self:
        if self.exposure is not Exposure.NONE and (self.port is None or self.health_path is None):
            raise ValueError(f"exposure {self.exposure.value!r} needs a port and a health_path")
        return self

    @property
    def package(self) -> str:
        """The service's import package (``my-service`` -> ``my_service``)."""
        return self.name.replace("-", "_")


def load_spec(path: Path) -> ServiceSpec:
    """Read one ``service.toml``; a bad spec raises naming the file and the field."""
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    try:
        return ServiceSpec.model_validate(data)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def find_repository_root(start: Path | None = None) -> Path:
    """The folder holding ``services/`` (walks up from ``start`` or the working directory)."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "services").is_dir() and (candidate / "pyproject.toml").is_file():
            return candidate
    raise FileNotFoundError(f"no repository root (a folder with services/) above {here}")


def load_specs(root: Path | None = None) -> dict[str, ServiceSpec]:
    """Every service of the repository, by name, in folder order."""
    services = (root or find_repository_root()) / "services"
    specs: dict[str, ServiceSpec] = {}
    for path in sorted(services.glob("*/service.toml")):
        spec = load_spec(path)
        if spec.name != path.parent.name:
            raise ValueError(f"{path}: name {spec.name!r} differs from its folder")
        specs[spec.name] = spec
    return specs
