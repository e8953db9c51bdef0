"""The service spec: what a service folder declares about itself in ``service.toml``.

One small declarative file per service holds the figures that the container, docker compose and
the CDK app all need (CPU, memory, task count, port, health path, exposure, trigger, what it
reads), so none of them is written twice by hand: compose is checked against the specs by a
test, and the infra builds every service from its spec. Adding a folder under ``services/`` with
a ``service.toml`` adds a service.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from servicekit.lifecycle import MAX_STOP_TIMEOUT

__all__ = [
    "AuthSpec",
    "BlueGreenController",
    "CapacityProvider",
    "CapacityProviderItem",
    "DatabaseSpec",
    "DeploymentSpec",
    "DeploymentStrategy",
    "EdgeSpec",
    "EnvironmentNames",
    "Exposure",
    "ScalingSpec",
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
        int, Field(ge=2, le=MAX_STOP_TIMEOUT, description="ECS stopTimeout, s: SIGTERM to SIGKILL")
    ] = 30
    user: Annotated[
        str,
        Field(
            pattern=r"^[1-9][0-9]*(?::[0-9]+)?$",
            description="the image's non-root uid[:gid] (its Dockerfile's useradd --uid)",
        ),
    ] = "10001"
    processes: Annotated[
        int,
        Field(
            ge=1,
            le=64,
            description="server processes per task, each with its own database pool (an http "
            "service's gunicorn workers: passed as WEB_CONCURRENCY)",
        ),
    ] = 1

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
    """An always-on service running its registry's jobs: each schedule's firing
    ({job, slot}) reaches it through its firings queue (``FIRINGS_QUEUE_URL``)."""

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
    queues: Annotated[
        dict[str, str],
        Field(description="env var -> queue name the service sends to (its URL is passed)"),
    ] = {}
    dead_letters: Annotated[
        list[str],
        Field(description="queues whose dead-letter queue the service reads and deletes from"),
    ] = []
    settings: Annotated[
        dict[str, str],
        Field(description="Parameter Store values under /{app}/{env}/{service}/ (key: a path)"),
    ] = {}
    flags: Annotated[
        dict[str, bool],
        Field(description="feature flags' initial values: /{app}/{env}/{service}/flags/{name}"),
    ] = {}


class DatabaseSpec(_Strict):
    """The service's share of the database's connections (passed as DATABASE__POOL_SIZE)."""

    pool_size: Annotated[int, Field(ge=1, description="connections per process, at most")]


class EdgeSpec(_Strict):
    """What the internet-facing load balancer and its WAF web ACL hold to (external services)."""

    max_body_bytes: Annotated[
        int,
        Field(
            ge=1,
            description="larger request bodies are refused: by WAF when Content-Length says "
            "so, by the service (MAX_BODY_BYTES) in any case",
        ),
    ] = 64 * 1024
    requests_per_ip: Annotated[
        int, Field(ge=10, description="per client address per rate_window_seconds (WAF)")
    ] = 2000
    requests_per_caller: Annotated[
        int,
        Field(ge=10, description="per Authorization header per rate_window_seconds (WAF)"),
    ] = 1000
    # The evaluation windows AWS WAF's rate-based rules offer.
    rate_window_seconds: Literal[60, 120, 300, 600] = 300
    private_paths: Annotated[
        tuple[str, ...],
        Field(description="path patterns the internet gets a 404 for (probes, API docs)"),
    ] = ()


class LoadBalancerSpec(_Strict):
    """How a served service's load balancer treats its targets: the ALB's target group and idle
    timeout in AWS, the local suite's HAProxy (compose/haproxy) in compose."""

    health_interval_seconds: Annotated[int, Field(ge=5, le=300)] = 15
    health_timeout_seconds: Annotated[int, Field(ge=2, le=120)] = 5
    healthy_threshold: Annotated[
        int, Field(ge=2, le=10, description="passed checks before a target gets traffic")
    ] = 2
    unhealthy_threshold: Annotated[
        int, Field(ge=2, le=10, description="failed checks before a target loses it")
    ] = 3
    deregistration_delay_seconds: Annotated[
        int,
        Field(
            ge=0,
            le=3600,
            description="a deregistered target's requests in flight get this long before it "
            "is stopped (keep it within task.stop_timeout's budget for the same requests)",
        ),
    ] = 30
    idle_timeout_seconds: Annotated[
        int,
        Field(
            ge=1,
            le=4000,
            description="idle client and target connections are closed after this (the "
            "server's keep-alive must be longer, so the load balancer closes first)",
        ),
    ] = 60

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> Self:
        if self.health_timeout_seconds >= self.health_interval_seconds:
            raise ValueError("health_timeout_seconds must be shorter than health_interval_seconds")
        return self


class AuthSpec(_Strict):
    """OAuth 2.0 resource server of the service: its scopes and the machine clients calling it."""

    scopes: Annotated[
        dict[str, str], Field(min_length=1, description="scope name -> what it allows")
    ]
    clients: Annotated[
        dict[str, list[str]],
        Field(description="client-credentials app client name -> the scopes it may request"),
    ] = {}
    paths: Annotated[
        tuple[str, ...],
        Field(
            description="path patterns the load balancer lets through only with a valid "
            "access token (defence in depth: the service verifies every token itself)"
        ),
    ] = ()

    @model_validator(mode="after")
    def _known_scopes(self) -> Self:
        for client, scopes in self.clients.items():
            unknown = sorted(set(scopes) - set(self.scopes))
            if unknown:
                raise ValueError(f"auth client {client!r} asks for undeclared scopes {unknown}")
        return self


class ScalingSpec(_Strict):
    """Service auto scaling: the count stays within min..max, each policy moves it on its own."""

    min_count: Annotated[int, Field(ge=0)]
    max_count: Annotated[int, Field(ge=1)]
    cpu_target: Annotated[float | None, Field(gt=0, le=100, description="average CPU, %")] = 60
    memory_target: Annotated[float | None, Field(gt=0, le=100, description="average memory, %")] = (
        75
    )
    requests_per_task: Annotated[
        int | None, Field(ge=1, description="load-balancer requests per task per minute")
    ] = None
    acceptable_latency_seconds: Annotated[
        float | None,
        Field(gt=0, description="longest a message should wait in the queue (sqs trigger)"),
    ] = None
    messages_per_second_per_task: Annotated[
        float | None,
        Field(gt=0, description="what one task gets through (measured: `make bench`)"),
    ] = None
    scale_in_cooldown: Annotated[int, Field(ge=0, le=3600)] = 300
    scale_out_cooldown: Annotated[int, Field(ge=0, le=3600)] = 60

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min_count > self.max_count:
            raise ValueError(f"min_count {self.min_count} is above max_count {self.max_count}")
        if (self.acceptable_latency_seconds is None) != (self.messages_per_second_per_task is None):
            raise ValueError(
                "acceptable_latency_seconds and messages_per_second_per_task go together: "
                "their product is the backlog one task may hold"
            )
        return self

    @property
    def backlog_per_task(self) -> int | None:
        """Visible messages one task may hold: what it clears within the acceptable latency."""
        if self.acceptable_latency_seconds is None or self.messages_per_second_per_task is None:
            return None
        return max(1, round(self.acceptable_latency_seconds * self.messages_per_second_per_task))


class CapacityProvider(StrEnum):
    FARGATE = "FARGATE"
    FARGATE_SPOT = "FARGATE_SPOT"
    EC2 = "EC2"  # the cluster's on-demand Auto Scaling group
    EC2_SPOT = "EC2_SPOT"  # the cluster's Spot Auto Scaling group

    @property
    def fargate(self) -> bool:
        return self in (CapacityProvider.FARGATE, CapacityProvider.FARGATE_SPOT)


class CapacityProviderItem(_Strict):
    provider: CapacityProvider
    base: Annotated[int, Field(ge=0, le=100000, description="tasks placed here first")] = 0
    weight: Annotated[int, Field(ge=0, le=1000, description="share of the tasks past base")] = 1


class DeploymentStrategy(StrEnum):
    ROLLING = "rolling"
    BLUE_GREEN = "blue_green"


class BlueGreenController(StrEnum):
    CODEDEPLOY = "codedeploy"  # CodeDeploy task sets; new revisions go through CreateDeployment
    ECS = "ecs"  # ECS-native blue/green: a CloudFormation update deploys


class DeploymentSpec(_Strict):
    """How a new revision replaces the running one; every strategy rolls back on failure."""

    strategy: DeploymentStrategy = DeploymentStrategy.ROLLING
    controller: BlueGreenController = BlueGreenController.ECS
    min_healthy_percent: Annotated[int, Field(ge=0, le=100)] = 100
    max_percent: Annotated[int, Field(ge=100, le=200)] = 200
    bake_minutes: Annotated[
        int, Field(ge=0, le=1440, description="blue/green: old revision kept after the switch")
    ] = 5
    codedeploy_config: Annotated[str, Field(pattern=r"^CodeDeployDefault\.ECS[A-Za-z0-9]+$")] = (
        "CodeDeployDefault.ECSCanary10Percent5Minutes"
    )

    @property
    def through_codedeploy(self) -> bool:
        """New revisions go through a CodeDeploy deployment (``suite release``), not CFN."""
        return (
            self.strategy is DeploymentStrategy.BLUE_GREEN
            and self.controller is BlueGreenController.CODEDEPLOY
        )


_DEFAULT_CAPACITY = (CapacityProviderItem(provider=CapacityProvider.FARGATE),)


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
    scaling: ScalingSpec | None = Field(
        default=None, description="absent: the service runs task.desired_count tasks"
    )
    capacity: Annotated[tuple[CapacityProviderItem, ...], Field(min_length=1)] = _DEFAULT_CAPACITY
    deployment: DeploymentSpec = DeploymentSpec()
    database: DatabaseSpec | None = Field(
        default=None, description="absent: servicekit's default pool size"
    )
    edge: EdgeSpec = EdgeSpec()
    load_balancer: LoadBalancerSpec = LoadBalancerSpec()
    auth: AuthSpec | None = None
    calls: tuple[str, ...] = Field(
        default=(),
        description="the services this one calls over the service network: each is admitted to "
        "their tasks and internal load balancer, and named to it as {NAME}__DISCOVERY_NAME and "
        "{NAME}__ALB_URL",
    )

    @model_validator(mode="after")
    def _served(self) -> Self:
        if self.exposure is not Exposure.NONE and (self.port is None or self.health_path is None):
            raise ValueError(f"exposure {self.exposure.value!r} needs a port and a health_path")
        if self.auth is not None and self.exposure is not Exposure.EXTERNAL:
            raise ValueError("[auth] needs exposure 'external' (its callers are on the internet)")
        return self

    @model_validator(mode="after")
    def _scaling(self) -> Self:
        scaling = self.scaling
        if scaling is None:
            return self
        count = self.task.desired_count
        if not scaling.min_count <= count <= scaling.max_count:
            raise ValueError(
                f"task.desired_count {count} is outside scaling {scaling.min_count}.."
                f"{scaling.max_count}"
            )
        if scaling.backlog_per_task is not None and self.trigger.kind != "sqs":
            raise ValueError("scaling.acceptable_latency_seconds needs an sqs trigger")
        if scaling.requests_per_task is not None and self.exposure is Exposure.NONE:
            raise ValueError("scaling.requests_per_task needs a load balancer (exposure)")
        return self

    @model_validator(mode="after")
    def _capacity(self) -> Self:
        # ECS refuses these strategies at deploy time; say so at synthesis instead.
        providers = [item.provider for item in self.capacity]
        if len(set(providers)) != len(providers):
            raise ValueError("capacity names a provider twice")
        if len({provider.fargate for provider in providers}) > 1:
            raise ValueError("capacity mixes Fargate and EC2 providers (ECS refuses that)")
        if sum(1 for item in self.capacity if item.base) > 1:
            raise ValueError("capacity: only one provider may have a base")
        if not any(item.weight for item in self.capacity):
            raise ValueError("capacity: at least one provider needs a weight above 0")
        return self

    @model_validator(mode="after")
    def _deployment(self) -> Self:
        blue_green = self.deployment.strategy is DeploymentStrategy.BLUE_GREEN
        if blue_green and self.exposure is Exposure.NONE:
            raise ValueError("deployment.strategy blue_green needs a load balancer (exposure)")
        return self

    @property
    def fargate(self) -> bool:
        """Whether the tasks run on Fargate (else on the cluster's EC2 capacity)."""
        return self.capacity[0].provider.fargate

    @property
    def uses_database(self) -> bool:
        """Whether the service reads the database secret (``db``), so holds a pool."""
        return "db" in self.config.secrets.values()

    @property
    def package(self) -> str:
        """The service's import package (``my-service`` -> ``my_service``)."""
        return self.name.replace("-", "_")

    def local_load_balancer(self) -> dict[str, str]:
        """The environment of its compose load balancer (compose/haproxy/haproxy.cfg reads it):
        what its ALB target group is in AWS, the other colour named ``NAME-green``."""
        balancing = self.load_balancer
        return {
            "PORT": str(self.port),
            "TARGET_PORT": str(self.port),
            "BLUE_HOST": self.name,
            "GREEN_HOST": f"{self.name}-green",
            "MAX_TARGETS": str(self.scaling.max_count if self.scaling else self.task.desired_count),
            "HEALTH_PATH": str(self.health_path),
            "HEALTH_INTERVAL": str(balancing.health_interval_seconds),
            "HEALTH_TIMEOUT": str(balancing.health_timeout_seconds),
            "HEALTHY_THRESHOLD": str(balancing.healthy_threshold),
            "UNHEALTHY_THRESHOLD": str(balancing.unhealthy_threshold),
            "DEREGISTRATION_DELAY": str(balancing.deregistration_delay_seconds),
            "IDLE_TIMEOUT": str(balancing.idle_timeout_seconds),
            "STOP_TIMEOUT": str(self.task.stop_timeout),
        }


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


@dataclass(frozen=True)
class EnvironmentNames:
    """How one environment's AWS resources are named: the infra creates them so
    (``infra/src/infra/platform.py``, ``service.py``) and the ``suite`` commands find them so.

    The ECS service itself is named after its spec (``spec.name``) inside the cluster.
    """

    app: str
    env: str

    @property
    def prefix(self) -> str:
        """``{app}-{env}``: the cluster, stack names, and every name below."""
        return f"{self.app}-{self.env}"

    def resource(self, service: str) -> str:
        """``{app}-{env}-{service}``: task definition family, CodeDeploy application and
        deployment group, EventBridge Scheduler group, alarm names' prefix."""
        return f"{self.prefix}-{service}"

    def log_group(self, service: str) -> str:
        return f"/{self.app}/{self.env}/{service}"

    def queue(self, name: str) -> str:
        """A queue of the platform (``[trigger] queue``); ``queue(name) + "-dlq"`` is its DLQ."""
        return f"{self.prefix}-{name}"

    def dead_letter_queue(self, name: str) -> str:
        return f"{self.queue(name)}-dlq"

    def firings_queue(self, service: str) -> str:
        """A scheduled service's queue of its schedules' firings; ``+ "-dlq"`` is its DLQ."""
        return self.queue(f"{service}-firings")

    def schedules_dead_letter_queue(self, service: str) -> str:
        """Where EventBridge Scheduler puts a firing it could not deliver after its retries."""
        return self.queue(f"{service}-schedules-dlq")
