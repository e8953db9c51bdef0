"""``suite rollback SERVICE``: back to what ran before.

- A CodeDeploy blue/green service with a deployment under way: stop it with rollback
  (CodeDeploy shifts the traffic back to the original task set).
- A CodeDeploy service otherwise: deploy the task definition revision before the running one
  (a blue/green deployment like ``suite release``'s, with the same AppSpec).
- A rolling (or ECS-native blue/green) service: update the service to the revision before the
  running one; ECS deploys it with the service's own strategy and circuit breaker.

"The revision before" is the family's newest ACTIVE revision below the running one. The next
``cdk deploy`` or ``suite release`` deploys forward again.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from servicekit import aws
from suite_tools.deployed import Deployed, call, pages
from suite_tools.errors import CommandError
from suite_tools.release import create_deployment, running_task_definition

__all__ = ["Plan", "apply", "confirm", "plan", "previous_revision"]


@dataclass(frozen=True)
class Plan:
    service: str
    action: str
    """``stop-deployment``, ``deploy-previous`` (CodeDeploy) or ``update-service`` (rolling)"""
    running: str
    target: str | None
    deployment_id: str | None = None

    def describe(self) -> str:
        if self.action == "stop-deployment":
            return (
                f"{self.service}: stop CodeDeploy deployment {self.deployment_id} with rollback "
                f"(traffic goes back to {_short(self.running)})"
            )
        how = "a CodeDeploy deployment" if self.action == "deploy-previous" else "UpdateService"
        return f"{self.service}: {_short(self.running)} -> {_short(self.target or '')} ({how})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "action": self.action,
            "running": self.running,
            "target": self.target,
            "deploymentId": self.deployment_id,
        }


def _short(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def previous_revision(task_definition: str) -> str:
    """The family's newest ACTIVE revision below ``task_definition``'s."""
    family, _, revision = _short(task_definition).rpartition(":")
    ecs = aws.client("ecs")
    for page in pages(
        "ecs",
        family,
        ecs,
        "list_task_definitions",
        familyPrefix=family,
        status="ACTIVE",
        sort="DESC",
    ):
        for arn in page.get("taskDefinitionArns", []):
            other_family, _, other = _short(arn).rpartition(":")
            if other_family == family and int(other) < int(revision):
                return str(arn)
    raise CommandError(f"no ACTIVE revision of {family} before {revision}: nothing to roll back to")


def plan(deployed: Deployed) -> Plan:
    name, spec = deployed.only()
    service = deployed.ecs_service(name)
    running = running_task_definition(service)
    if spec.deployment.through_codedeploy:
        under_way = deployed.deployments_under_way(name)
        if under_way:
            return Plan(name, "stop-deployment", running, None, under_way[0])
        return Plan(name, "deploy-previous", running, previous_revision(running))
    return Plan(name, "update-service", running, previous_revision(running))


def apply(deployed: Deployed, chosen: Plan) -> Plan:
    """Carry the plan out; the plan with the deployment it started, if any."""
    name = chosen.service
    if chosen.action == "stop-deployment":
        call(
            "codedeploy",
            chosen.deployment_id,
            aws.client("codedeploy").stop_deployment,
            deploymentId=chosen.deployment_id,
            autoRollbackEnabled=True,
        )
        return chosen
    assert chosen.target is not None
    if chosen.action == "deploy-previous":
        group = deployed.names.resource(name)
        deployment = call(
            "codedeploy",
            f"{group}/{group}",
            create_deployment,
            codedeploy=aws.client("codedeploy"),
            group=group,
            service=deployed.ecs_service(name),
            target=chosen.target,
            previous=chosen.running,
        )
        return Plan(name, chosen.action, chosen.running, chosen.target, deployment)
    updated = call(
        "ecs",
        f"{deployed.cluster}/{name}",
        aws.client("ecs").update_service,
        cluster=deployed.cluster,
        service=name,
        taskDefinition=chosen.target,
    )
    deployments = updated["service"].get("deployments", [])
    primary = next((d["id"] for d in deployments if d.get("status") == "PRIMARY"), None)
    return Plan(name, chosen.action, chosen.running, chosen.target, primary)


def confirm(question: str) -> bool:
    """Ask on the terminal; with no terminal, the answer is no (``--yes`` says yes)."""
    if not sys.stdin.isatty():
        raise CommandError("not confirmed: stdin is not a terminal; pass --yes to go ahead")
    # The question goes to stderr with the plan: stdout carries only the result.
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in {"y", "yes"}
