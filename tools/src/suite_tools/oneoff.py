"""One-off tasks: a command run once in a service's task definition, where its tasks run.

What ``aws ecs run-task`` with a command override does, from the service's own settings (its
current task definition, capacity provider strategy or launch type, and network), so the command
reaches what the service reaches (the database in its private subnets) with the service's role.
The task is followed until it stops; its app container's exit code is the outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from servicekit import aws
from suite_tools.deployed import Deployed, call
from suite_tools.errors import CommandError
from suite_tools.session import APP_CONTAINER

__all__ = ["TaskRun", "run_once"]

STARTED_BY = "suite"  # ECS's startedBy: a person's one-off task, told apart from the service's


@dataclass
class TaskRun:
    task: str
    command: list[str]
    exit_code: int | None
    reason: str | None

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "command": self.command,
            "exitCode": self.exit_code,
            "reason": self.reason,
        }


def run_once(
    deployed: Deployed,
    service: str,
    command: Sequence[str],
    *,
    timeout: float = 900.0,
    poll: float = 5.0,
    write: Callable[[str], None] = lambda _line: None,
) -> TaskRun:
    """Start ``command`` in a task of ``service``'s task definition and wait until it stops."""
    described = deployed.ecs_service(service)
    ecs = aws.client("ecs")
    resource = f"{deployed.cluster}/{service}"
    # The service's strategy, else its launch type; with neither, the cluster's default
    # strategy applies (as it did to the service).
    placement: dict[str, Any] = {}
    if described.get("capacityProviderStrategy"):
        placement["capacityProviderStrategy"] = described["capacityProviderStrategy"]
    elif described.get("launchType"):
        placement["launchType"] = described["launchType"]
    started = call(
        "ecs",
        resource,
        ecs.run_task,
        cluster=deployed.cluster,
        taskDefinition=described["taskDefinition"],
        networkConfiguration=described["networkConfiguration"],
        overrides={"containerOverrides": [{"name": APP_CONTAINER, "command": list(command)}]},
        startedBy=STARTED_BY,
        **placement,
    )
    if not started.get("tasks"):
        reasons = "; ".join(
            f"{item.get('arn', '-')}: {item.get('reason')}" for item in started.get("failures", [])
        )
        raise CommandError(f"{service}: the task did not start ({reasons or 'no reason given'})")
    arn = str(started["tasks"][0]["taskArn"])
    write(f"started {arn}: {' '.join(command)}")
    deadline = time.monotonic() + timeout
    while True:
        found = call("ecs", resource, ecs.describe_tasks, cluster=deployed.cluster, tasks=[arn])
        task = found["tasks"][0]
        if task.get("lastStatus") == "STOPPED":
            break
        if time.monotonic() >= deadline:
            raise CommandError(
                f"task {arn} is still {task.get('lastStatus')} after {timeout:g} s; it carries "
                f"on (aws ecs describe-tasks --cluster {deployed.cluster} --tasks {arn})"
            )
        time.sleep(poll)
    container: dict[str, Any] = next(
        (item for item in task.get("containers", []) if item.get("name") == APP_CONTAINER), {}
    )
    exit_code = container.get("exitCode")
    return TaskRun(
        task=arn,
        command=list(command),
        exit_code=None if exit_code is None else int(exit_code),
        reason=task.get("stoppedReason") or container.get("reason"),
    )
