"""Release the CodeDeploy blue/green services: the deployment CloudFormation cannot start.

ECS refuses to change a CODE_DEPLOY service's task definition outside CodeDeploy, so for those
services the CDK app names the task definition by family in the service resource: ``cdk deploy``
registers the new revision (the new image digest) and leaves the service alone. This command
then deploys that revision the way CodeDeploy requires: the family's latest ACTIVE revision, in
an AppSpec carrying the service's own container, port, capacity and network, handed to the
service's deployment group (``{app}-{env}-{service}``, as the infra names it). It follows the
deployment until it succeeds, fails (CodeDeploy rolls back) or the deadline passes.

It is safe to run again: a service already on the latest revision is left alone, and a
deployment already under way for that revision is followed rather than duplicated.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from servicekit import aws
from suite_contract.spec import ServiceSpec
from suite_tools.errors import CommandError, aws_error
from suite_tools.specs import repository_root, select_specs

if TYPE_CHECKING:
    from mypy_boto3_codedeploy import CodeDeployClient
    from mypy_boto3_codedeploy.literals import DeploymentStatusType
    from mypy_boto3_ecs import ECSClient

__all__ = [
    "Release",
    "appspec",
    "codedeploy_services",
    "create_deployment",
    "document",
    "release",
    "running_task_definition",
]

Write = Callable[[str], None]

# A deployment ends in one of these; until then it holds its deployment group (CodeDeploy
# refuses a second one), which is why a run looks for one UNDER_WAY before creating its own.
FINISHED = frozenset({"Succeeded", "Failed", "Stopped"})
UNDER_WAY: Sequence[DeploymentStatusType] = ("Created", "Queued", "InProgress", "Baking", "Ready")


@dataclass
class Release:
    """One service's release: from ``previous`` to ``task_definition`` through ``deployment_id``
    (None when the service already ran the latest revision)."""

    service: str
    group: str
    task_definition: str
    previous: str
    deployment_id: str | None = None
    status: str = "Unchanged"
    failure: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "deploymentGroup": self.group,
            "taskDefinition": self.task_definition,
            "previousTaskDefinition": self.previous,
            "deploymentId": self.deployment_id,
            "status": self.status,
            "failure": self.failure,
        }


def codedeploy_services(specs: Mapping[str, ServiceSpec]) -> list[str]:
    """The services whose new revisions go through CodeDeploy (the others deploy with CFN)."""
    return [name for name, spec in specs.items() if spec.deployment.through_codedeploy]


def appspec(service: Mapping[str, Any], task_definition: str) -> str:
    """The AppSpec (JSON) deploying ``task_definition`` to ``service`` (DescribeServices' shape).

    The container and port, capacity provider strategy, platform version and network are the
    service's own: left out, CodeDeploy's new task set would fall back to defaults (the
    cluster's default capacity provider strategy, for one) instead of what the spec asked for.
    """
    balancers = service.get("loadBalancers") or []
    if not balancers:
        raise CommandError(f"service {service['serviceName']} has no load balancer to shift")
    properties: dict[str, Any] = {
        "TaskDefinition": task_definition,
        "LoadBalancerInfo": {
            "ContainerName": balancers[0]["containerName"],
            "ContainerPort": balancers[0]["containerPort"],
        },
    }
    if service.get("platformVersion"):
        properties["PlatformVersion"] = service["platformVersion"]
    network = (service.get("networkConfiguration") or {}).get("awsvpcConfiguration")
    if network:
        properties["NetworkConfiguration"] = {
            "AwsvpcConfiguration": {
                "Subnets": network["subnets"],
                "SecurityGroups": network.get("securityGroups", []),
                "AssignPublicIp": network.get("assignPublicIp", "DISABLED"),
            }
        }
    strategy = service.get("capacityProviderStrategy") or []
    if strategy:
        properties["CapacityProviderStrategy"] = [
            {
                "CapacityProvider": item["capacityProvider"],
                "Weight": item.get("weight", 0),
                "Base": item.get("base", 0),
            }
            for item in strategy
        ]
    document = {
        "version": 0.0,
        "Resources": [{"TargetService": {"Type": "AWS::ECS::Service", "Properties": properties}}],
    }
    return json.dumps(document, indent=2, sort_keys=True)


def create_deployment(
    codedeploy: CodeDeployClient,
    group: str,
    service: Mapping[str, Any],
    target: str,
    previous: str,
) -> str:
    """Start the deployment of ``target`` to ``service`` (DescribeServices' shape); its id."""
    content = appspec(service, target)
    created = codedeploy.create_deployment(
        applicationName=group,
        deploymentGroupName=group,
        revision={
            "revisionType": "AppSpecContent",
            "appSpecContent": {
                "content": content,
                "sha256": hashlib.sha256(content.encode()).hexdigest(),
            },
        },
        description=f"{_short(previous)} -> {_short(target)}",
    )
    return str(created["deploymentId"])


def running_task_definition(service: Mapping[str, Any]) -> str:
    """The task definition the service runs."""
    # A CODE_DEPLOY service runs task sets; the PRIMARY one is what takes the traffic.
    for task_set in service.get("taskSets") or []:
        if task_set.get("status") == "PRIMARY":
            return str(task_set["taskDefinition"])
    return str(service["taskDefinition"])


def _family(task_definition_arn: str) -> str:
    return task_definition_arn.rsplit("/", 1)[-1].rsplit(":", 1)[0]


def _short(task_definition_arn: str) -> str:
    return task_definition_arn.rsplit("/", 1)[-1]


def _appspec_target(deployment: Mapping[str, Any]) -> str | None:
    content = deployment.get("revision", {}).get("appSpecContent", {}).get("content", "")
    try:
        resources = json.loads(content)["Resources"]
        return str(resources[0]["TargetService"]["Properties"]["TaskDefinition"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


class _Releaser:
    def __init__(self, *, prefix: str, write: Write) -> None:
        self.prefix = prefix
        self.write = write
        self.codedeploy: CodeDeployClient = aws.client("codedeploy")
        self.ecs: ECSClient = aws.client("ecs")

    def start(self, name: str) -> Release:
        """Create the service's deployment (or find it needless, or already under way)."""
        group = f"{self.prefix}-{name}"
        try:
            found = self.codedeploy.get_deployment_group(
                applicationName=group, deploymentGroupName=group
            )["deploymentGroupInfo"]
        except (ClientError, BotoCoreError) as error:
            raise self._error(error, "codedeploy", f"{group}/{group}", hint=name) from error
        targets = found.get("ecsServices") or []
        if not targets:
            raise CommandError(f"deployment group {group} deploys no ECS service")
        cluster, service_name = targets[0]["clusterName"], targets[0]["serviceName"]
        try:
            services = self.ecs.describe_services(cluster=cluster, services=[service_name])
        except (ClientError, BotoCoreError) as error:
            raise self._error(error, "ecs", f"{cluster}/{service_name}") from error
        if not services["services"]:
            raise CommandError(f"ECS service {service_name} not found in cluster {cluster}")
        service: dict[str, Any] = dict(services["services"][0])
        previous = running_task_definition(service)
        try:
            latest = self.ecs.describe_task_definition(taskDefinition=_family(previous))
        except (ClientError, BotoCoreError) as error:
            raise self._error(error, "ecs", _family(previous)) from error
        target = latest["taskDefinition"]["taskDefinitionArn"]
        release = Release(name, group, target, previous)
        # Before "already runs": the new task set is PRIMARY while the old one bakes, and the
        # deployment can still roll back until it has finished.
        active = self._under_way(group)
        if active is not None:
            if _appspec_target(active) != target:
                raise CommandError(
                    f"deployment {active['deploymentId']} of {group} is under way with another "
                    "revision: wait for it, or stop it (aws deploy stop-deployment "
                    f"--deployment-id {active['deploymentId']} --auto-rollback-enabled)"
                )
            release.deployment_id, release.status = active["deploymentId"], active["status"]
            self.write(f"{name}: following {release.deployment_id}, already under way")
            return release
        if target == previous:
            self.write(f"{name}: already runs {_short(target)}; nothing to release")
            return release
        try:
            release.deployment_id = create_deployment(
                self.codedeploy, group, service, target, previous
            )
        except (ClientError, BotoCoreError) as error:
            raise self._error(error, "codedeploy", f"{group}/{group}") from error
        release.status = "Created"
        self.write(
            f"{name}: deployment {release.deployment_id}: {_short(previous)} -> {_short(target)}"
        )
        return release

    def _under_way(self, group: str) -> dict[str, Any] | None:
        try:
            ids = self.codedeploy.list_deployments(
                applicationName=group,
                deploymentGroupName=group,
                includeOnlyStatuses=UNDER_WAY,
            )["deployments"]
            if not ids:
                return None
            return dict(self.codedeploy.get_deployment(deploymentId=ids[0])["deploymentInfo"])
        except (ClientError, BotoCoreError) as error:
            raise self._error(error, "codedeploy", f"{group}/{group}") from error

    def follow(self, releases: Sequence[Release], *, timeout: float, poll: float) -> None:
        """Poll the deployments until each has finished, or raise when the deadline passes."""
        started = time.monotonic()
        pending = [item for item in releases if item.deployment_id is not None]
        while True:
            for item in list(pending):
                info = self._deployment(item)
                if info["status"] != item.status:
                    item.status = info["status"]
                    elapsed = time.monotonic() - started
                    self.write(
                        f"{item.service}: {item.deployment_id} {item.status} ({elapsed:.0f} s)"
                    )
                if item.status in FINISHED:
                    pending.remove(item)
                    if item.status != "Succeeded":
                        item.failure = _failure(info)
            if not pending:
                return
            if time.monotonic() - started >= timeout:
                late = ", ".join(f"{i.service} ({i.deployment_id} {i.status})" for i in pending)
                raise CommandError(
                    f"still under way after {timeout:.0f} s: {late}; CodeDeploy carries on "
                    "(aws deploy get-deployment --deployment-id ID shows where it is)"
                )
            time.sleep(poll)

    def _deployment(self, item: Release) -> dict[str, Any]:
        try:
            found = self.codedeploy.get_deployment(deploymentId=str(item.deployment_id))
        except (ClientError, BotoCoreError) as error:
            raise self._error(error, "codedeploy", str(item.deployment_id)) from error
        return dict(found["deploymentInfo"])

    def _error(
        self,
        error: ClientError | BotoCoreError,
        service: str,
        resource: str,
        hint: str | None = None,
    ) -> CommandError:
        code = (
            error.response.get("Error", {}).get("Code") if isinstance(error, ClientError) else None
        )
        if hint and code in {
            "ApplicationDoesNotExistException",
            "DeploymentGroupDoesNotExistException",
        }:
            return CommandError(
                f"no CodeDeploy deployment group {resource}: deploy the service's stack first "
                f"(cdk deploy {self.prefix}-{hint})"
            )
        return aws_error(error, service=service, resource=resource)


def _failure(info: Mapping[str, Any]) -> str:
    """What CodeDeploy said went wrong, and what it did about it."""
    error = info.get("errorInformation") or {}
    reason = ": ".join(part for part in (error.get("code"), error.get("message")) if part)
    line = f"deployment {info['deploymentId']} {info['status']}"
    if reason:
        line += f" ({reason})"
    rollback = info.get("rollbackInfo") or {}
    if rollback.get("rollbackDeploymentId"):
        line += f"; rolled back by {rollback['rollbackDeploymentId']}"
    elif rollback.get("rollbackMessage"):
        line += f"; {rollback['rollbackMessage']}"
    return line


def release(
    services: Sequence[str],
    *,
    app: str,
    env: str,
    wait: bool = True,
    timeout: float = 3600,
    poll: float = 10,
    root: Path | None = None,
    write: Write,
) -> list[Release]:
    """Deploy the latest task definition revision of each CodeDeploy-controlled service.

    ``services`` empty means every such service. The deployments are created first and then
    followed together (CodeDeploy runs them side by side). Raises CommandError naming every
    service whose deployment failed or was stopped, or that is still under way at the deadline.
    """
    specs = select_specs(repository_root(root), services)
    chosen = codedeploy_services(specs)
    others = [name for name in services if name not in chosen]
    if others:
        raise CommandError(
            f"{', '.join(others)}: not deployed by CodeDeploy (services/*/service.toml "
            "[deployment]); `cdk deploy` releases it"
        )
    releaser = _Releaser(prefix=f"{app}-{env}", write=write)
    releases = [releaser.start(name) for name in chosen]
    if wait:
        releaser.follow(releases, timeout=timeout, poll=poll)
        failed = [item for item in releases if item.failure]
        if failed:
            raise CommandError("; ".join(f"{item.service}: {item.failure}" for item in failed))
    return releases


def document(releases: Sequence[Release]) -> dict[str, Any]:
    """``--json``: ``{"releases": {service: {...}}}``."""
    return {"releases": {item.service: item.as_dict() for item in releases}}
