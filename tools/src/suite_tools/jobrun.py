"""``suite run JOB``: one run of a scheduler job now, sent the way its schedule sends it.

Each job is an EventBridge Scheduler schedule whose target sends the firing
``{"job": NAME, "slot": <aws.scheduler.scheduled-time>}`` to the scheduler's firings queue, which
the scheduler service consumes. ``suite run`` reads the schedule (its target queue and input) and
sends that same message with the slot set to now, so the run takes the path a scheduled one does:
same queue, same consumer, same slot lock, same history and metrics.

``--wait`` follows the scheduler's log group for the run's last line, which names the job and
the run's slot (the schedule's latest fire time at or before now): ``finished: STATUS`` (exit 0
when succeeded, else 1) or ``skipped: slot already run`` (exit 0: the schedule ran this slot
already; the lock doing its job).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from servicekit import aws
from servicekit.cron import parse
from servicekit.scheduling import Firing
from suite_contract.spec import ScheduleTrigger
from suite_tools.deployed import Deployed, call, error_code, pages
from suite_tools.errors import CommandError
from suite_tools.logs import LogQuery, filtered

__all__ = ["JobRun", "run_job", "scheduler_service", "trigger"]

Write = Callable[[str], None]

SKIPPED = "skipped: slot already run"
FINISHED = "finished: "


@dataclass
class JobRun:
    job: str
    message_id: str
    slot: datetime
    """The run's slot: the schedule's latest fire time at or before the firing."""
    status: str = "SENT"
    exit_code: int | None = None
    error: str | None = None

    @property
    def slot_text(self) -> str:
        return self.slot.isoformat(timespec="seconds").replace("+00:00", "Z")

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "messageId": self.message_id,
            "slot": self.slot_text,
            "status": self.status,
            "exitCode": self.exit_code,
            "error": self.error,
        }


def scheduler_service(deployed: Deployed) -> str:
    """The service whose jobs are scheduled (the one with a schedule trigger)."""
    found = [n for n, s in deployed.specs.items() if isinstance(s.trigger, ScheduleTrigger)]
    if not found:
        raise CommandError('no service has [trigger] kind = "schedule" (services/*/service.toml)')
    return found[0]


def _schedule(deployed: Deployed, service: str, job: str) -> dict[str, Any]:
    group = deployed.names.resource(service)
    scheduler = aws.client("scheduler")
    try:
        schedule: dict[str, Any] = call(
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
    return schedule


def trigger(deployed: Deployed, service: str, job: str, now: datetime) -> JobRun:
    """Send ``job``'s firing for ``now`` where its schedule sends it; the run it asks for."""
    schedule = _schedule(deployed, service, job)
    target = schedule["Target"]
    arn = str(target["Arn"])
    if not arn.startswith("arn:aws:sqs:"):
        raise CommandError(f"schedule {schedule['GroupName']}/{job} does not send to a queue")
    # What the schedule sends, with its scheduled time: the job's name is the schedule's own.
    try:
        sent = Firing.model_validate(json.loads(target.get("Input") or "{}") | {"slot": now})
    except ValueError as error:  # a ValidationError, or Input that is not JSON
        raise CommandError(
            f"schedule {schedule['GroupName']}/{job} does not send a firing: {error}"
        ) from error
    *_, account, name = arn.split(":")
    sqs = aws.client("sqs")
    queue_url = call("sqs", name, sqs.get_queue_url, QueueName=name, QueueOwnerAWSAccountId=account)
    answer = call(
        "sqs",
        name,
        sqs.send_message,
        QueueUrl=queue_url["QueueUrl"],
        MessageBody=sent.model_dump_json(),
    )
    slot = parse(str(schedule["ScheduleExpression"])).slot_at(
        now, str(schedule.get("ScheduleExpressionTimezone") or "UTC")
    )
    if slot is None:
        raise CommandError(f"{job}: {schedule['ScheduleExpression']} has not fired yet")
    return JobRun(sent.job, str(answer["MessageId"]), slot)


def run_job(
    deployed: Deployed, job: str, *, wait: bool, timeout: float, poll: float, write: Write
) -> JobRun:
    service = scheduler_service(deployed)
    sent_at = datetime.now(UTC)
    run = trigger(deployed, service, job, sent_at)
    write(f"{job}: firing {run.message_id} sent for slot {run.slot_text}")
    if not wait:
        return run
    group = deployed.names.log_group(service)
    query = LogQuery(since=sent_at, text=job)
    start = int(sent_at.timestamp() * 1000) - 1000
    deadline = time.monotonic() + timeout
    while True:
        for event in filtered(group, query, start):
            if _outcome(run, event.message):
                write(f"{job}: {run.status}")
                return run
        if time.monotonic() >= deadline:
            raise CommandError(
                f"{job}: no outcome for slot {run.slot_text} after {timeout:.0f} s; the firing is "
                f"on its queue or running (suite logs {service} --follow)"
            )
        time.sleep(poll)


def _outcome(run: JobRun, message: str) -> bool:
    """Whether ``message`` is the run's last line; if so, its status is set from it."""
    try:
        line = json.loads(message)
    except ValueError:
        return False
    if not isinstance(line, dict) or line.get("job") != run.job:
        return False
    try:
        slot = datetime.fromisoformat(str(line.get("slot")))
    except ValueError:
        return False
    if slot != run.slot:
        return False
    text = str(line.get("message", ""))
    if text == SKIPPED:
        run.status, run.exit_code = "skipped", 0
    elif text.startswith(FINISHED) and "status" in line:
        run.status = str(line["status"])
        run.exit_code = 0 if run.status == "succeeded" else 1
        if run.exit_code:
            run.error = text.removeprefix(FINISHED)
    else:
        return False
    return True
