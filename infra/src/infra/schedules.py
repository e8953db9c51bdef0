"""The schedules of a scheduled service, read from the registry its spec names (their single
source of truth), and the clock that fires them into the service.

The scheduled service is an ECS service like the others (one task, always up); what makes it
scheduled is :class:`ScheduledJobs`: one EventBridge Scheduler schedule per registry job, whose
target sends the firing ``{"job": NAME, "slot": <aws.scheduler.scheduled-time>}`` to the
service's firings queue (``FIRINGS_QUEUE_URL``), which the service consumes
(``servicekit.scheduling``). Why not a one-off task per run: ``services/scheduler/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, TimeZone
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.alarms import AlarmTopic
from infra.checks import SSE_SQS, acknowledge_nag, skip_checkov
from infra.names import pascal
from servicekit.scheduling import FiringsQueue, load_registry
from suite_contract.spec import EnvironmentNames, ScheduleTrigger

__all__ = ["ScheduledJob", "ScheduledJobs", "load_schedules"]

SCHEDULE_RETRIES = 3
SCHEDULE_MAX_EVENT_AGE = Duration.minutes(15)


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    expression: str
    """EventBridge ``cron(...)`` or ``rate(...)``; the registry validated it."""
    timezone: str
    timeout_seconds: float
    description: str


def load_schedules(trigger: ScheduleTrigger) -> list[ScheduledJob]:
    """The jobs of the registry the spec names; a bad one raises naming the spec's value
    (:class:`servicekit.scheduling.InvalidRegistry`). Importing connects nowhere: the registry
    modules keep AWS and settings out of import time."""
    return [
        ScheduledJob(
            name=str(entry["name"]),
            expression=str(entry["expression"]),
            timezone=str(entry["timezone"]),
            timeout_seconds=float(str(entry["timeout_seconds"])),
            description=str(entry.get("description", "")),
        )
        for entry in load_registry(trigger.registry).export()
    ]


class ScheduledJobs:
    """The firings queue and its DLQ, one schedule per registry job sending to it, and alarms,
    built into ``scope`` (the service's stack) like the other parts: the schedule group, the
    schedules' DLQ, the schedules and the run-failures filter keep the logical ids they had when
    each schedule started a task, so a deployed environment's update changes them in place
    (their names are fixed: replacing them would collide with the old ones).

    - ``firings``: encrypted (SSE-SQS), TLS only; its visibility timeout outlasts the longest
      run's report and a firing received too often goes to ``firings_dlq``
      (``servicekit.scheduling.FiringsQueue``). ``consumer`` (the task role) consumes it and
      may send poison to the DLQ.
    - ``role``: what EventBridge Scheduler assumes; the targets grant it ``sqs:SendMessage`` on
      the firings queue and on ``schedules_dlq`` (failed deliveries after its retries) only.
    - Alarms: a run that failed, timed out, was interrupted or died (the runtime's EMF line,
      written by the run or by the next attempt that finds it dead); a firing dead-lettered; a
      firing Scheduler could not deliver.
    """

    def __init__(
        self,
        scope: Construct,
        *,
        names: EnvironmentNames,
        service: str,
        trigger: ScheduleTrigger,
        stop_timeout: int,
        role: iam.Role,
        consumer: iam.IGrantable,
        log_group: logs.ILogGroup,
        metric_namespace: str,
        metric_name: str,
        alarms: AlarmTopic,
    ) -> None:
        self.scope = scope
        self.jobs = load_schedules(trigger)
        figures = FiringsQueue.for_jobs((job.timeout_seconds for job in self.jobs), stop_timeout)
        firings = names.firings_queue(service)
        self.firings_dlq = self._dead_letter_queue("FiringsDlq", f"{firings}-dlq")
        self.firings = sqs.Queue(
            scope,
            "Firings",
            queue_name=firings,
            visibility_timeout=Duration.seconds(figures.visibility_timeout),
            retention_period=Duration.days(4),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.firings_dlq, max_receive_count=figures.max_receive_count
            ),
        )
        skip_checkov(self.firings, "CKV_AWS_27", SSE_SQS)
        self.schedules_dlq = self._dead_letter_queue(
            "SchedulesDlq", names.schedules_dead_letter_queue(service)
        )
        self.firings.grant_consume_messages(consumer)
        self.firings_dlq.grant_send_messages(consumer)  # poison firings, with the reason

        group = scheduler.ScheduleGroup(
            scope, "ScheduleGroup", schedule_group_name=names.resource(service)
        )
        for job in self.jobs:
            scheduler.Schedule(
                scope,
                f"Job{pascal(job.name.replace('.', '-'))}",
                schedule_name=job.name,
                schedule_group=group,
                schedule=scheduler.ScheduleExpression.expression(
                    job.expression, TimeZone.of(job.timezone)
                ),
                target=scheduler_targets.SqsSendMessage(
                    self.firings,
                    input=scheduler.ScheduleTargetInput.from_object(
                        {"job": job.name, "slot": scheduler.ContextAttribute.scheduled_time}
                    ),
                    dead_letter_queue=self.schedules_dlq,
                    retry_attempts=SCHEDULE_RETRIES,
                    max_event_age=SCHEDULE_MAX_EVENT_AGE,
                    role=role,
                ),
                description=(job.description or job.name)[:512],
                time_window=scheduler.TimeWindow.off(),
            )

        for alarm_id, queue, what in (
            ("schedules-dlq", self.schedules_dlq, "a schedule could not deliver its firing"),
            ("firings-dlq", self.firings_dlq, "a firing was dead-lettered (poison or retried out)"),
        ):
            alarms.alarm(
                alarm_id,
                name=alarm_id,
                description=f"{service}: {what}",
                metric=queue.metric_approximate_number_of_messages_visible(
                    period=Duration.minutes(5), statistic="Maximum"
                ),
                threshold=1,
                comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=1,
            )
        # One EMF line per finished run, with its status as a property; a run whose process died
        # gets its line from the attempt that finds it dead.
        failures = logs.MetricFilter(
            scope,
            "RunFailures",
            log_group=log_group,
            filter_pattern=logs.FilterPattern.all(
                logs.FilterPattern.number_value("$.ScheduledRuns", "=", 1),
                logs.FilterPattern.string_value("$.status", "!=", "succeeded"),
            ),
            metric_namespace=metric_namespace,
            metric_name=metric_name,
            metric_value="1",
            default_value=0,
        )
        alarms.alarm(
            "run-failures",
            name="run-failures",
            description=(
                f"a {service} job run failed, timed out, was interrupted or died unreported"
            ),
            metric=failures.metric(statistic="Sum", period=Duration.minutes(5)),
            threshold=1,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
        )

    def _dead_letter_queue(self, id: str, name: str) -> sqs.Queue:
        queue = sqs.Queue(
            self.scope,
            id,
            queue_name=name,
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        acknowledge_nag(queue, "AwsSolutions-SQS3", "this queue is a dead-letter queue")
        skip_checkov(queue, "CKV_AWS_27", SSE_SQS)
        return queue
