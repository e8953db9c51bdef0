"""``suite run JOB``: one run of a scheduler job now, started the way its schedule starts it.

Today each job is an EventBridge Scheduler schedule whose target is ECS RunTask of the
scheduler's task definition with ``scheduler run JOB --slot <aws.scheduler.scheduled-time>``.
The run is started from the schedule's own target (cluster, task definition, capacity provider
strategy, network, overrides), so it runs exactly where and how a scheduled run does, with the
slot set to now. :func:`trigger` is the one place that knows this: when the scheduler becomes
an always-on service fed by a queue, it sends the queue's message instead.

A slot already run (the schedule fired this minute) is the scheduler's lock doing its job: the
run exits 0 and its log says ``skipped: slot already run``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from servicekit import aws
from servicekit.spec import ScheduleTrigger
from suite_tools.deployed import Deployed, call, error_code, pages
from suite_tools.errors import CommandError

__all__ = ["SLOT_PLACEHOLDER", "JobRun", "run_job", "scheduler_service", "trigger"]

Write = Callable[[str], None]

# What EventBridge Scheduler replaces with the invocation's scheduled time.
SLOT_PLACEHOLDER = "<aws.scheduler.scheduled-time>"


@dataclass
class JobRun:
    job: str
    task: str
    slot: str
    status: str = "PENDING"
    exit_code: int | None = None
    stopped_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "task": self.task,
            "slot": self.slot,
            "status": self.status,
            "exitCode": self.exit_code,
            "stoppedReason": self.stopped_reason,
        }


def scheduler_service(deployed: Deployed) -> str:
    """The service whose jobs are scheduled (the one with a schedule trigger)."""
    found = [n for n, s in deployed.specs.items() if isinstance(s.trigger, ScheduleTrigger)]
    if not found:
        raise CommandError('no service has [trigger] kind = "schedule" (services/*/service.toml)')
    return found[0]


def _camel(value: Any) -> Any:
    """EventBridge Scheduler's PascalCase ECS parameters as RunTask's camelCase."""
    if isinstance(value, dict):
        return {key[:1].lower() + key[1:]: _camel(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_camel(item) for item in value]
    return value


def trigger(deployed: Deployed, service: str, job: str, slot: datetime) -> str:
    """Start ``job``'s run for ``slot`` through the path its schedule uses; the task's ARN."""
    group = deployed.names.resource(service)
    scheduler = aws.client("scheduler")
    try:
        schedule = call(
            "scheduler", f"{group}/{job}", scheduler.get_schedule, GroupName=group, Name=job
        )
    except CommandError as error:
        if error_code(error.__cause__) != "ResourceNotFoundException":
            raise
        known = [
            str(item["Name"])
            for page in pages("scheduler", group, scheduler, "list_schedules", GroupName=group)
            for item in page.get("Schedules", [])
        ]
        raise CommandError(
            f"no job {job} in schedule group {group} (jobs: {', '.join(sorted(known)) or 'none'})"
        ) from error
    target = schedule["Target"]
    parameters = target.get("EcsParameters")
    if not parameters:
        raise CommandError(f"schedule {group}/{job} does not start an ECS task")
    stamp = slot.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    overrides = json.loads((target.get("Input") or "{}").replace(SLOT_PLACEHOLDER, stamp))
    options: dict[str, Any] = {
        "cluster": target["Arn"],
        "taskDefinition": parameters["TaskDefinitionArn"],
        "count": parameters.get("TaskCount", 1),
        "overrides": overrides,
        "startedBy": "suite run",
    }
    for key in ("LaunchType", "PlatformVersion", "Group", "PropagateTags", "EnableECSManagedTags"):
        if key in parameters:
            options[key[:1].lower() + key[1:]] = parameters[key]
    if "CapacityProviderStrategy" in parameters:
        options["capacityProviderStrategy"] = parameters["CapacityProviderStrategy"]
    if "NetworkConfiguration" in parameters:
        options["networkConfiguration"] = _camel(parameters["NetworkConfiguration"])
    started = call("ecs", target["Arn"], aws.client("ecs").run_task, **options)
    if not started.get("tasks"):
        reasons = "; ".join(
            f"{item.get('arn', '')}: {item.get('reason', '')}" for item in started["failures"]
        )
        raise CommandError(f"ECS started no task for {job}: {reasons or 'no reason given'}")
    return str(started["tasks"][0]["taskArn"])


def run_job(
    deployed: Deployed, job: str, *, wait: bool, timeout: float, poll: float, write: Write
) -> JobRun:
    service = scheduler_service(deployed)
    slot = datetime.now(UTC)
    task = trigger(deployed, service, job, slot)
    run = JobRun(job, task, slot.isoformat(timespec="seconds").replace("+00:00", "Z"))
    write(f"{job}: started {task.rsplit('/', 1)[-1]} for slot {run.slot}")
    if not wait:
        return run
    deadline = time.monotonic() + timeout
    ecs = aws.client("ecs")
    while True:
        found = call("ecs", task, ecs.describe_tasks, cluster=deployed.cluster, tasks=[task])
        described = (found.get("tasks") or [{}])[0]
        status = str(described.get("lastStatus", run.status))
        if status != run.status:
            run.status = status
            write(f"{job}: {status}")
        if status == "STOPPED":
            run.stopped_reason = described.get("stoppedReason") or None
            run.exit_code = _exit_code(described)
            return run
        if time.monotonic() >= deadline:
            raise CommandError(
                f"{job}: task {task} still {status} after {timeout:.0f} s; it carries on "
                f"(suite logs {service} --follow)"
            )
        time.sleep(poll)


def _exit_code(task: dict[str, Any]) -> int | None:
    """The exit code of the container the run's command overrides (the app's)."""
    names = {item.get("name") for item in task.get("overrides", {}).get("containerOverrides", [])}
    for container in task.get("containers", []):
        if (not names or container.get("name") in names) and "exitCode" in container:
            return int(container["exitCode"])
    return None
