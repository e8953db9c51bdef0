"""``suite status``: what each deployed service is doing, and whether anything is unhealthy.

Everything comes from the services' own APIs, read-only: ECS (counts per capacity provider,
deployments and task sets, events), CodeDeploy (a blue/green deployment under way and its
lifecycle), Elastic Load Balancing (target health), CloudWatch (alarms in ALARM, the queue's
oldest message), SQS (depths), EventBridge Scheduler (the schedules) and CloudWatch Logs (each
job's last run: the scheduler writes one EMF line per finished run).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from servicekit import aws
from servicekit.cron import ScheduleError, parse
from suite_contract.spec import QueueTrigger, ScheduleTrigger, ServiceSpec
from suite_tools.deployed import Deployed, call, error_code, instant, pages
from suite_tools.errors import aws_error

__all__ = ["RUN_LOOKBACK", "collect", "render"]

# How far back the scheduler's log is searched for each job's last run: a weekly job shows.
RUN_LOOKBACK = timedelta(days=8)
EVENTS = 5
# ECS takes at most 100 task ARNs per DescribeTasks.
DESCRIBE_TASKS_BATCH = 100


def collect(deployed: Deployed) -> dict[str, Any]:
    """``--json``'s document: ``{"app", "env", "healthy", "services": {name: {...}}}``."""
    services = {name: _service(deployed, name, spec) for name, spec in deployed.specs.items()}
    return {
        "app": deployed.names.app,
        "env": deployed.names.env,
        "healthy": all(item["healthy"] for item in services.values()),
        "services": services,
    }


def _service(deployed: Deployed, name: str, spec: ServiceSpec) -> dict[str, Any]:
    status: dict[str, Any] = {"kind": spec.trigger.kind, "problems": []}
    trigger = spec.trigger
    service = deployed.ecs_service(name)
    status["tasks"] = _tasks(deployed, name, service)
    status["deployments"] = [_deployment(item) for item in service.get("deployments", [])]
    status["taskSets"] = [_task_set(item) for item in service.get("taskSets", [])]
    if spec.deployment.through_codedeploy:
        status["codedeploy"] = _codedeploy(deployed.deployments_under_way(name))
    status["targets"] = _targets(service)
    status["events"] = [
        {"at": instant(event.get("createdAt")), "message": event.get("message", "")}
        for event in service.get("events", [])[:EVENTS]
    ]
    prefixes = [deployed.names.resource(name)]
    if isinstance(trigger, QueueTrigger):
        name_of = deployed.names.queue(trigger.queue)
        status["queue"] = _queue(name_of, deployed.names.dead_letter_queue(trigger.queue))
        prefixes.append(name_of)
    if isinstance(trigger, ScheduleTrigger):
        status["jobs"] = _jobs(deployed, name)
        firings = deployed.names.firings_queue(name)
        status["queue"] = _queue(firings, f"{firings}-dlq")
        status["schedulesDlq"] = _counts(deployed.names.schedules_dead_letter_queue(name))[0]
    status["alarms"] = _alarms(prefixes)
    status["problems"] = _problems(status)
    status["healthy"] = not status["problems"]
    return status


# -- ECS ----------------------------------------------------------------------------------


def _tasks(deployed: Deployed, name: str, service: Mapping[str, Any]) -> dict[str, Any]:
    ecs = aws.client("ecs")
    arns: list[str] = []
    for page in pages(
        "ecs",
        f"{deployed.cluster}/{name}",
        ecs,
        "list_tasks",
        cluster=deployed.cluster,
        serviceName=name,
        desiredStatus="RUNNING",
    ):
        arns.extend(page.get("taskArns", []))
    by_provider: dict[str, Counter[str]] = {}
    for start in range(0, len(arns), DESCRIBE_TASKS_BATCH):
        found = call(
            "ecs",
            f"{deployed.cluster}/{name}",
            ecs.describe_tasks,
            cluster=deployed.cluster,
            tasks=arns[start : start + DESCRIBE_TASKS_BATCH],
        )
        for task in found.get("tasks", []):
            provider = task.get("capacityProviderName") or task.get("launchType") or "-"
            by_provider.setdefault(provider, Counter())[
                str(task.get("lastStatus", "")).lower()
            ] += 1
    return {
        "desired": service.get("desiredCount", 0),
        "running": service.get("runningCount", 0),
        "pending": service.get("pendingCount", 0),
        "byCapacityProvider": {
            provider: {"running": counts["running"], "pending": counts["pending"]}
            for provider, counts in sorted(by_provider.items())
        },
    }


def _deployment(item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": item.get("id"),
        "status": item.get("status"),
        "taskDefinition": _short(item.get("taskDefinition", "")),
        "rolloutState": item.get("rolloutState"),
        "reason": item.get("rolloutStateReason"),
        "desired": item.get("desiredCount", 0),
        "running": item.get("runningCount", 0),
        "pending": item.get("pendingCount", 0),
        "failedTasks": item.get("failedTasks", 0),
    }


def _task_set(item: Mapping[str, Any]) -> dict[str, Any]:
    scale = item.get("scale") or {}
    return {
        "id": item.get("id"),
        "status": item.get("status"),
        "taskDefinition": _short(item.get("taskDefinition", "")),
        "scale": scale.get("value"),
        "running": item.get("runningCount", 0),
        "stability": item.get("stabilityStatus"),
    }


def _short(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


# -- CodeDeploy ---------------------------------------------------------------------------


def _codedeploy(ids: list[str]) -> list[dict[str, Any]]:
    codedeploy = aws.client("codedeploy")
    deployments = []
    for deployment_id in ids:
        info = call(
            "codedeploy", deployment_id, codedeploy.get_deployment, deploymentId=deployment_id
        )["deploymentInfo"]
        deployments.append(
            {
                "id": deployment_id,
                "status": info.get("status"),
                "created": instant(info.get("createTime")),
                **_lifecycle(deployment_id),
            }
        )
    return deployments


def _lifecycle(deployment_id: str) -> dict[str, Any]:
    """The ECS target's lifecycle events and the task sets' traffic weights.

    Not every endpoint serves deployment targets (moto does not): the deployment is still
    shown, with a note saying what is missing, rather than the whole status failing.
    """
    codedeploy = aws.client("codedeploy")
    try:
        targets = codedeploy.list_deployment_targets(deploymentId=deployment_id)["targetIds"]
        found = (
            codedeploy.batch_get_deployment_targets(deploymentId=deployment_id, targetIds=targets)[
                "deploymentTargets"
            ]
            if targets
            else []
        )
    except (ClientError, BotoCoreError) as error:
        return {"lifecycle": None, "traffic": None, "note": f"lifecycle unavailable: {error}"}
    lifecycle: list[dict[str, Any]] = []
    traffic: list[dict[str, Any]] = []
    for target in found:
        ecs_target = target.get("ecsTarget") or {}
        lifecycle.extend(
            {"event": event.get("lifecycleEventName"), "status": event.get("status")}
            for event in ecs_target.get("lifecycleEvents", [])
        )
        traffic.extend(
            {
                "taskSet": task_set.get("identifer") or task_set.get("identifier"),
                "role": task_set.get("taskSetLabel"),
                "weight": task_set.get("trafficWeight"),
                "status": task_set.get("status"),
            }
            for task_set in ecs_target.get("taskSetsInfo", [])
        )
    return {"lifecycle": lifecycle, "traffic": traffic}


# -- load balancing, alarms, queues -------------------------------------------------------


def _targets(service: Mapping[str, Any]) -> list[dict[str, Any]]:
    groups = [item["targetGroupArn"] for item in service.get("loadBalancers", [])]
    for task_set in service.get("taskSets", []):
        groups.extend(item["targetGroupArn"] for item in task_set.get("loadBalancers", []))
    elbv2 = aws.client("elbv2")
    result = []
    for arn in dict.fromkeys(group for group in groups if group):
        health = call(
            "elasticloadbalancing", arn, elbv2.describe_target_health, TargetGroupArn=arn
        )["TargetHealthDescriptions"]
        states = Counter(item["TargetHealth"]["State"] for item in health)
        result.append(
            {
                "targetGroup": arn.split(":targetgroup/", 1)[-1].split("/", 1)[0],
                "states": dict(sorted(states.items())),
                "unhealthy": [
                    {
                        "target": f"{item['Target']['Id']}:{item['Target'].get('Port', '')}",
                        "state": item["TargetHealth"]["State"],
                        "reason": item["TargetHealth"].get("Reason"),
                    }
                    for item in health
                    if item["TargetHealth"]["State"] not in {"healthy", "initial", "draining"}
                ],
            }
        )
    return result


def _alarms(prefixes: Iterable[str]) -> list[dict[str, Any]]:
    cloudwatch = aws.client("cloudwatch")
    alarms: list[dict[str, Any]] = []
    for prefix in prefixes:
        for page in pages(
            "cloudwatch",
            f"{prefix}-*",
            cloudwatch,
            "describe_alarms",
            AlarmNamePrefix=f"{prefix}-",
            StateValue="ALARM",
        ):
            alarms.extend(
                {
                    "name": alarm["AlarmName"],
                    "since": instant(alarm.get("StateUpdatedTimestamp")),
                    "reason": alarm.get("StateReason", ""),
                }
                for alarm in page.get("MetricAlarms", []) + page.get("CompositeAlarms", [])
            )
    return alarms


def _queue_url(name: str) -> str:
    sqs = aws.client("sqs")
    return str(call("sqs", name, sqs.get_queue_url, QueueName=name)["QueueUrl"])


def _counts(name: str) -> tuple[int, int]:
    """The queue's visible and in-flight message counts."""
    attributes = call(
        "sqs",
        name,
        aws.client("sqs").get_queue_attributes,
        QueueUrl=_queue_url(name),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes.get("ApproximateNumberOfMessages", 0)),
        int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
    )


def _queue(name: str, dead_letter_queue: str) -> dict[str, Any]:
    visible, in_flight = _counts(name)
    return {
        "name": name,
        "visible": visible,
        "inFlight": in_flight,
        "oldestAgeSeconds": _oldest_age(name),
        "deadLetters": _counts(dead_letter_queue)[0],
    }


def _oldest_age(queue: str) -> float | None:
    """CloudWatch's ApproximateAgeOfOldestMessage, last 15 minutes; None when not reported
    (SQS publishes it only for an active queue)."""
    now = datetime.now(UTC)
    # EndTime is exclusive and CloudWatch compares whole seconds: a point reported within the
    # current second would fall outside a window that ends now.
    found = call(
        "cloudwatch",
        queue,
        aws.client("cloudwatch").get_metric_statistics,
        Namespace="AWS/SQS",
        MetricName="ApproximateAgeOfOldestMessage",
        Dimensions=[{"Name": "QueueName", "Value": queue}],
        StartTime=now - timedelta(minutes=15),
        EndTime=now + timedelta(minutes=1),
        Period=60,
        Statistics=["Maximum"],
    )["Datapoints"]
    if not found:
        return None
    return float(max(found, key=lambda point: point["Timestamp"])["Maximum"])


# -- the scheduler ------------------------------------------------------------------------


def _jobs(deployed: Deployed, name: str) -> list[dict[str, Any]]:
    """The schedules as EventBridge Scheduler holds them, with each job's last run."""
    group = deployed.names.resource(name)
    scheduler = aws.client("scheduler")
    summaries: list[dict[str, Any]] = []
    for page in pages("scheduler", group, scheduler, "list_schedules", GroupName=group):
        summaries.extend(page.get("Schedules", []))
    last = _last_runs(deployed.names.log_group(name))
    now = datetime.now(UTC)
    jobs = []
    for summary in sorted(summaries, key=lambda item: str(item["Name"])):
        job = str(summary["Name"])
        schedule = call(
            "scheduler", f"{group}/{job}", scheduler.get_schedule, GroupName=group, Name=job
        )
        expression = str(schedule.get("ScheduleExpression", ""))
        timezone = str(schedule.get("ScheduleExpressionTimezone") or "UTC")
        state = str(schedule.get("State", "ENABLED"))
        jobs.append(
            {
                "job": job,
                "expression": expression,
                "timezone": timezone,
                "state": state,
                "next": _next_fire(expression, timezone, now) if state == "ENABLED" else None,
                "lastRun": last.get(job),
            }
        )
    return jobs


def _next_fire(expression: str, timezone: str, now: datetime) -> str | None:
    try:
        upcoming = parse(expression).trigger(timezone).get_next_fire_time(None, now)
    except ScheduleError:
        return None
    return instant(upcoming) if upcoming is not None else None


def _last_runs(log_group: str) -> dict[str, dict[str, Any]]:
    """Each job's newest finished run, from the EMF line the runtime writes per run
    (``{"ScheduledRuns": 1, "job": ..., "status": ...}``)."""
    logs = aws.client("logs")
    start = int((datetime.now(UTC) - RUN_LOOKBACK).timestamp() * 1000)
    runs: dict[str, dict[str, Any]] = {}
    try:
        found = logs.get_paginator("filter_log_events").paginate(
            logGroupName=log_group, filterPattern='"ScheduledRuns"', startTime=start
        )
        for page in found:
            for event in page.get("events", []):
                try:
                    line = json.loads(event["message"])
                except ValueError:
                    continue
                if not isinstance(line, dict) or line.get("ScheduledRuns") != 1:
                    continue
                job = str(line.get("job", ""))
                if job and event["timestamp"] >= runs.get(job, {}).get("_at", 0):
                    runs[job] = {
                        "_at": event["timestamp"],
                        "at": instant(event["timestamp"]),
                        "status": line.get("status"),
                        "seconds": line.get("ScheduledRunDuration"),
                    }
    except (ClientError, BotoCoreError) as error:
        # No log group yet: the scheduler has never run in this environment.
        if error_code(error) != "ResourceNotFoundException":
            raise aws_error(error, service="logs", resource=log_group) from error
        return {}
    for run in runs.values():
        del run["_at"]
    return runs


# -- verdict and table --------------------------------------------------------------------


def _problems(status: Mapping[str, Any]) -> list[str]:
    problems = []
    tasks = status.get("tasks")
    if tasks and tasks["running"] < tasks["desired"]:
        problems.append(f"{tasks['running']} of {tasks['desired']} tasks running")
    problems.extend(
        f"deployment {item['id']} {item['rolloutState']}"
        + (f": {item['reason']}" if item["reason"] else "")
        for item in status.get("deployments", [])
        if item["rolloutState"] == "FAILED"
    )
    for group in status.get("targets", []):
        problems.extend(
            f"target {item['target']} in {group['targetGroup']} {item['state']}"
            + (f" ({item['reason']})" if item["reason"] else "")
            for item in group["unhealthy"]
        )
    problems.extend(f"alarm {alarm['name']}" for alarm in status.get("alarms", []))
    queue = status.get("queue")
    if queue and queue["deadLetters"]:
        problems.append(f"{queue['deadLetters']} dead letters in {queue['name']}-dlq")
    if status.get("schedulesDlq"):
        problems.append(f"{status['schedulesDlq']} firings the schedules could not deliver")
    problems.extend(
        f"job {job['job']} last run {job['lastRun']['status']}"
        for job in status.get("jobs", [])
        if job["lastRun"] and job["lastRun"]["status"] != "succeeded"
    )
    return problems


def render(document: Mapping[str, Any]) -> list[str]:
    """The table for people: one block per service."""
    lines = [
        f"{document['app']}-{document['env']}: "
        + ("healthy" if document["healthy"] else "UNHEALTHY")
    ]
    for name, status in document["services"].items():
        lines.append("")
        lines.append(f"{name} ({status['kind']}): " + ("ok" if status["healthy"] else "UNHEALTHY"))
        lines.extend(f"  ! {problem}" for problem in status["problems"])
        lines.extend(f"  {row}" for row in _rows(status))
    return lines


def _rows(status: Mapping[str, Any]) -> Iterable[str]:
    tasks = status.get("tasks")
    if tasks:
        providers = ", ".join(
            f"{provider} {counts['running']} running {counts['pending']} pending"
            for provider, counts in tasks["byCapacityProvider"].items()
        )
        yield (
            f"{'tasks':<12} desired {tasks['desired']}  running {tasks['running']}  "
            f"pending {tasks['pending']}" + (f"  ({providers})" if providers else "")
        )
    for item in status.get("deployments", []):
        yield (
            f"{'deployment':<12} {item['status']} {item['taskDefinition']} "
            f"{item['rolloutState'] or '-'} {item['running']}/{item['desired']} running"
            + (f" {item['failedTasks']} failed" if item["failedTasks"] else "")
        )
    for item in status.get("taskSets", []):
        yield (
            f"{'task set':<12} {item['status']} {item['taskDefinition']} "
            f"scale {item['scale']}% {item['running']} running {item['stability'] or ''}"
        ).rstrip()
    for item in status.get("codedeploy", []):
        line = f"{'codedeploy':<12} {item['id']} {item['status']}"
        if item.get("lifecycle"):
            line += " " + " ".join(f"{e['event']}={e['status']}" for e in item["lifecycle"])
        if item.get("traffic"):
            line += " traffic " + " ".join(f"{t['role']}:{t['weight']}%" for t in item["traffic"])
        if item.get("note"):
            line += f" ({item['note']})"
        yield line
    for group in status.get("targets", []):
        states = " ".join(f"{state} {count}" for state, count in group["states"].items())
        yield f"{'targets':<12} {group['targetGroup']}: {states or 'none registered'}"
    queue = status.get("queue")
    if queue:
        age = queue["oldestAgeSeconds"]
        yield (
            f"{'queue':<12} {queue['name']}: {queue['visible']} visible  "
            f"{queue['inFlight']} in flight  oldest "
            + (f"{age:.0f} s" if age is not None else "none")
            + f"  dlq {queue['deadLetters']}"
        )
    for job in status.get("jobs", []):
        last = job["lastRun"]
        yield (
            f"{'job':<12} {job['job']:<24} {job['expression']:<24} "
            + (f"last {last['at']} {last['status']}" if last else "last none")
            + f"  next {job['next'] or '-'}"
            + ("" if job["state"] == "ENABLED" else f"  ({job['state']})")
        )
    for alarm in status.get("alarms", []):
        yield f"{'alarm':<12} {alarm['name']} since {alarm['since']}"
    for event in status.get("events", []):
        yield f"{'event':<12} {event['at']} {event['message']}"
