"""The deployed environment the day-two commands act on: its names, its specs, its AWS calls."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from servicekit import aws
from suite_contract.spec import EnvironmentNames, ServiceSpec
from suite_tools.errors import CommandError, aws_error
from suite_tools.release import UNDER_WAY
from suite_tools.specs import repository_root, select_specs

__all__ = ["Deployed", "call", "error_code", "instant", "pages"]


def call(
    service: str, resource: str | None, operation: Callable[..., Any], /, **kwargs: Any
) -> Any:
    """One AWS call; a failure becomes one line naming the action and the resource."""
    try:
        return operation(**kwargs)
    except (ClientError, BotoCoreError) as error:
        raise aws_error(error, service=service, resource=resource) from error


def pages(
    service: str, resource: str | None, client: Any, operation: str, /, **kwargs: Any
) -> Iterator[dict[str, Any]]:
    """The pages of a paginated AWS call, failures as :func:`call`'s."""
    try:
        yield from client.get_paginator(operation).paginate(**kwargs)
    except (ClientError, BotoCoreError) as error:
        raise aws_error(error, service=service, resource=resource) from error


def error_code(error: BaseException | None) -> str | None:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code") or "") or None
    return None


def instant(value: datetime | float | int | None) -> str | None:
    """An AWS timestamp (datetime, or epoch milliseconds) as ISO-8601 UTC, seconds."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value / 1000, UTC)
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Deployed:
    """One environment (``--app``, ``--env``) and the services chosen from the specs."""

    names: EnvironmentNames
    specs: dict[str, ServiceSpec]

    @classmethod
    def open(
        cls, services: Sequence[str], *, app: str, env: str, root: Path | None = None
    ) -> Deployed:
        return cls(EnvironmentNames(app, env), select_specs(repository_root(root), services))

    @property
    def cluster(self) -> str:
        return self.names.prefix

    def only(self) -> tuple[str, ServiceSpec]:
        """The one service a command acts on."""
        if len(self.specs) != 1:
            raise CommandError("name one service")
        return next(iter(self.specs.items()))

    def ecs_service(self, name: str) -> dict[str, Any]:
        """DescribeServices' view of the service; a missing one says which stack makes it."""
        try:
            found = call(
                "ecs",
                f"{self.cluster}/{name}",
                aws.client("ecs").describe_services,
                cluster=self.cluster,
                services=[name],
            )
        except CommandError as error:
            if error_code(error.__cause__) != "ClusterNotFoundException":
                raise
            raise CommandError(
                f"no ECS cluster {self.cluster}: deploy the platform stack (cdk deploy "
                f"{self.names.resource('platform')}), or check --app/--env"
            ) from error
        services = [s for s in found.get("services", []) if s.get("status") != "INACTIVE"]
        if not services:
            raise CommandError(
                f"no ECS service {name} in cluster {self.cluster}: deploy its stack "
                f"(cdk deploy {self.names.resource(name)})"
            )
        return dict(services[0])

    def deployments_under_way(self, name: str) -> list[str]:
        """The ids of the service's CodeDeploy deployments not yet finished."""
        group = self.names.resource(name)
        return list(
            call(
                "codedeploy",
                f"{group}/{group}",
                aws.client("codedeploy").list_deployments,
                applicationName=group,
                deploymentGroupName=group,
                includeOnlyStatuses=list(UNDER_WAY),
            ).get("deployments", [])
        )
