"""The work queues: one per queue a service consumes, each with its dead-letter queue and alarms.

They live in the platform stack because they hold work in flight: replacing a service's stack
must not drop its messages.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.alarms import AlarmTopic
from infra.checks import SSE_SQS, acknowledge_nag, skip_checkov
from infra.names import pascal
from suite_contract.spec import QueueTrigger, ServiceSpec

__all__ = ["Queues"]


class Queues:
    """``queues`` and ``dead_letter_queues`` by queue name, from the services' triggers.

    A queue is declared by the service that consumes it; two consumers must declare it alike,
    and a service may send only to a queue some service consumes.
    """

    def __init__(
        self,
        scope: Construct,
        *,
        prefix: str,
        specs: Mapping[str, ServiceSpec],
        alarms: AlarmTopic,
    ) -> None:
        self.queues: dict[str, sqs.Queue] = {}
        self.dead_letter_queues: dict[str, sqs.Queue] = {}
        for name, trigger in _consumed(specs).items():
            dlq = sqs.Queue(
                scope,
                f"Queue{pascal(name)}Dlq",
                queue_name=f"{prefix}-{name}-dlq",
                retention_period=Duration.days(14),
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
            )
            acknowledge_nag(dlq, "AwsSolutions-SQS3", "this queue is the dead-letter queue")
            queue = sqs.Queue(
                scope,
                f"Queue{pascal(name)}",
                queue_name=f"{prefix}-{name}",
                visibility_timeout=Duration.seconds(trigger.visibility_timeout),
                retention_period=Duration.days(4),
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
                dead_letter_queue=sqs.DeadLetterQueue(
                    queue=dlq, max_receive_count=trigger.max_receive_count
                ),
            )
            for encrypted in (queue, dlq):
                skip_checkov(encrypted, "CKV_AWS_27", SSE_SQS)
            _queue_alarms(alarms, name, queue, dlq, trigger)
            self.queues[name] = queue
            self.dead_letter_queues[name] = dlq


def _consumed(specs: Mapping[str, ServiceSpec]) -> dict[str, QueueTrigger]:
    """Each consumed queue's trigger; refuses a queue declared twice differently, or sent to
    but consumed by nobody."""
    triggers: dict[str, QueueTrigger] = {}
    for spec in specs.values():
        trigger = spec.trigger
        if isinstance(trigger, QueueTrigger):
            known = triggers.setdefault(trigger.queue, trigger)
            if known != trigger:
                raise ValueError(
                    f"{spec.name}: queue {trigger.queue!r} is declared differently by two services"
                )
    for spec in specs.values():
        for queue in spec.config.queues.values():
            if queue not in triggers:
                raise ValueError(
                    f"{spec.name}: sends to queue {queue!r} that no service consumes "
                    f"(consumed: {sorted(triggers) or 'none'})"
                )
    return triggers


def _queue_alarms(
    alarms: AlarmTopic, name: str, queue: sqs.Queue, dlq: sqs.Queue, trigger: QueueTrigger
) -> None:
    five_minutes = Duration.minutes(5)
    # A message older than ten visibility timeouts has been retried or ignored for long.
    oldest = max(600, 10 * trigger.visibility_timeout)
    for id, metric, threshold, what in (
        (
            "dlq-not-empty",
            dlq.metric_approximate_number_of_messages_visible(
                period=five_minutes, statistic="Maximum"
            ),
            1,
            f"messages of {name} exhausted their retries (the jobs are dead)",
        ),
        (
            "oldest-message",
            queue.metric_approximate_age_of_oldest_message(
                period=five_minutes, statistic="Maximum"
            ),
            oldest,
            f"{name}'s oldest message waits longer than {oldest} s: consumers are behind",
        ),
    ):
        alarms.alarm(
            f"Queue{pascal(name)}{pascal(id)}",
            name=f"{name}-{id}",
            description=what,
            metric=metric,
            threshold=threshold,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
        )
