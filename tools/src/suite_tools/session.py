"""``suite exec``: a shell (or one command) in a running task, through ECS Exec.

As ``aws ecs execute-command`` does: ExecuteCommand opens a Session Manager session and
``session-manager-plugin`` (AWS's binary, installed separately) carries the terminal over it.
The plugin's arguments are the AWS CLI's: the session JSON, the region, ``StartSession``, the
profile, the target parameters and the ECS endpoint.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
from typing import Any

from servicekit import aws
from suite_tools.deployed import Deployed, call
from suite_tools.errors import CommandError

__all__ = ["PLUGIN", "PLUGIN_INSTALL", "exec_command", "plugin_arguments"]

PLUGIN = "session-manager-plugin"
PLUGIN_INSTALL = (
    "https://docs.aws.amazon.com/systems-manager/latest/userguide/"
    "session-manager-working-with-install-plugin.html"
)
APP_CONTAINER = "app"  # the infra's name for the service's own container


def plugin_arguments(
    session: dict[str, Any], *, region: str, profile: str, target: str, endpoint: str
) -> list[str]:
    """The plugin's command line, as the AWS CLI builds it for ``ecs execute-command``."""
    return [
        PLUGIN,
        json.dumps(session),
        region,
        "StartSession",
        profile,
        json.dumps({"Target": target}),
        endpoint,
    ]


def _plugin() -> str:
    found = shutil.which(PLUGIN)
    if found is None:
        raise CommandError(
            f"{PLUGIN} is not installed (ECS Exec's terminal goes through it): see "
            f"{PLUGIN_INSTALL}, e.g. the .deb from "
            "https://s3.amazonaws.com/session-manager-downloads/plugin/latest/ubuntu_64bit/"
            "session-manager-plugin.deb"
        )
    return found


def _task(deployed: Deployed, service: str, task_id: str | None) -> dict[str, Any]:
    ecs = aws.client("ecs")
    resource = f"{deployed.cluster}/{service}"
    if task_id is None:
        arns = call(
            "ecs",
            resource,
            ecs.list_tasks,
            cluster=deployed.cluster,
            serviceName=service,
            desiredStatus="RUNNING",
        ).get("taskArns", [])
        if not arns:
            raise CommandError(f"{service} has no running task in cluster {deployed.cluster}")
        task_id = arns[0]
    found = call("ecs", resource, ecs.describe_tasks, cluster=deployed.cluster, tasks=[task_id])
    tasks = found.get("tasks", [])
    if not tasks or tasks[0].get("lastStatus") != "RUNNING":
        raise CommandError(f"task {task_id} is not running in cluster {deployed.cluster}")
    return dict(tasks[0])


def exec_command(
    deployed: Deployed, service: str, *, task_id: str | None, command: list[str]
) -> int:
    """Run ``command`` (default a shell) in the service's container; the session's exit code."""
    plugin = _plugin()
    task = _task(deployed, service, task_id)
    if not task.get("enableExecuteCommand"):
        raise CommandError(
            f"ECS Exec is not enabled on {service}'s tasks: the infra must set "
            "enableExecuteCommand on the service (tools/README.md, `suite exec`), then new "
            "tasks accept it"
        )
    container = next(
        (item for item in task.get("containers", []) if item.get("name") == APP_CONTAINER),
        None,
    )
    if container is None or not container.get("runtimeId"):
        raise CommandError(f"task {task['taskArn']} has no running {APP_CONTAINER} container")
    ecs = aws.client("ecs")
    answer = call(
        "ecs",
        task["taskArn"],
        ecs.execute_command,
        cluster=deployed.cluster,
        task=task["taskArn"],
        container=APP_CONTAINER,
        interactive=True,
        command=shlex.join(command) if command else "/bin/sh",
    )
    task_id = str(task["taskArn"]).rsplit("/", 1)[-1]
    arguments = plugin_arguments(
        answer["session"],
        region=ecs.meta.region_name,
        profile=os.environ.get("AWS_PROFILE", ""),
        target=f"ecs:{deployed.cluster}_{task_id}_{container['runtimeId']}",
        endpoint=ecs.meta.endpoint_url,
    )
    # The plugin owns the terminal from here; Ctrl-C belongs to the remote shell (the AWS CLI
    # ignores SIGINT the same way while the plugin runs).
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.call([plugin, *arguments[1:]])  # noqa: S603 - AWS's plugin
    finally:
        signal.signal(signal.SIGINT, previous)
