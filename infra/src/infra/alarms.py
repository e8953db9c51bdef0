"""Alarms and the metrics several places read: every alarm of the app is made here.

Every alarm notifies the environment's alarm topic and treats missing data as not breaching:
a metric that is absent (no traffic, no messages, no tasks yet) is not trouble by itself.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_sns as sns
from constructs import Construct

__all__ = ["AlarmTopic", "image_findings", "running_tasks"]


class AlarmTopic:
    """Makes alarms in ``scope`` that notify ``topic``, named ``{name_prefix}-{name}``.

    ``created`` lists them in order (CodeDeploy rolls back on a service's).
    """

    def __init__(self, scope: Construct, *, topic: sns.ITopic, name_prefix: str) -> None:
        self.scope = scope
        self.topic = topic
        self.name_prefix = name_prefix
        self.created: list[cloudwatch.Alarm] = []

    def alarm(
        self,
        id: str,
        *,
        name: str,
        description: str,
        metric: cloudwatch.IMetric,
        threshold: float,
        comparison: cloudwatch.ComparisonOperator,
        evaluation_periods: int,
        datapoints_to_alarm: int | None = None,
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self.scope,
            id,
            alarm_name=f"{self.name_prefix}-{name}",
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=datapoints_to_alarm,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
        self.created.append(alarm)
        return alarm


def running_tasks(cluster: str, service: str, *, label: str | None = None) -> cloudwatch.Metric:
    """Container Insights' running task count of a service (absent while it has none)."""
    return cloudwatch.Metric(
        namespace="ECS/ContainerInsights",
        metric_name="RunningTaskCount",
        dimensions_map={"ClusterName": cluster, "ServiceName": service},
        statistic="Average",
        period=Duration.minutes(1),
        label=label,
    )


def image_findings(scope: Construct, *, app: str, prefix: str, topic: sns.ITopic) -> events.Rule:
    """A pushed image of this app with HIGH or CRITICAL findings reaches the alarm topic.

    ECR's scan result is an event, not a metric. The repositories are the account's (the
    registry stack): each environment is told, since each may be about to run the image.
    """
    severity = [{"numeric": [">", 0]}]
    return events.Rule(
        scope,
        "ImageScanFindings",
        rule_name=f"{prefix}-image-findings",
        description=f"an image in {app}/* has HIGH or CRITICAL findings",
        event_pattern=events.EventPattern(
            source=["aws.ecr"],
            detail_type=["ECR Image Scan"],
            detail={
                "repository-name": [{"prefix": f"{app}/"}],
                "scan-status": ["COMPLETE"],
                "$or": [
                    {"finding-severity-counts": {"CRITICAL": severity}},
                    {"finding-severity-counts": {"HIGH": severity}},
                ],
            },
        ),
        targets=[targets.SnsTopic(topic)],
    )
