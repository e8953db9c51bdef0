"""A service's alarms: tasks missing, and for a load-balanced one its answers' latency, errors and
health. Named ``{prefix}-{service}-{id}``, they notify the environment's alarm topic."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_elasticloadbalancingv2 as elbv2

from infra.alarms import AlarmTopic, running_tasks
from infra.edge import LoadBalancer

__all__ = ["below_desired_alarm", "load_balancer_alarms"]

# Fail the 5xx alarm above this share of requests over five minutes.
FIVE_XX_PERCENT = 5
# An internet-facing service's p99: a request path's budget (the api answers from one database
# query and one SQS send, each with its own timeouts well under this).
P99_LATENCY_SECONDS = 1.0
BELOW_DESIRED_MINUTES = 10


def below_desired_alarm(alarms: AlarmTopic, *, cluster: str, service: str) -> cloudwatch.Alarm:
    """Fewer tasks running than ECS wants, for longer than a deploy or a scale-out takes:
    tasks failing to start (image, settings, capacity) or being stopped over and over."""
    desired = cloudwatch.Metric(
        namespace="ECS/ContainerInsights",
        metric_name="DesiredTaskCount",
        dimensions_map={"ClusterName": cluster, "ServiceName": service},
        statistic="Average",
        period=Duration.minutes(1),
    )
    return alarms.alarm(
        "below-desired",
        name="below-desired",
        description=f"{service} runs fewer tasks than desired for {BELOW_DESIRED_MINUTES} minutes",
        metric=cloudwatch.MathExpression(
            expression="FILL(desired, 0) - FILL(running, 0)",
            using_metrics={"desired": desired, "running": running_tasks(cluster, service)},
            label="tasks missing",
            period=Duration.minutes(1),
        ),
        threshold=1,
        comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluation_periods=BELOW_DESIRED_MINUTES,
    )


def load_balancer_alarms(
    alarms: AlarmTopic,
    *,
    service: str,
    lb: LoadBalancer,
    target_groups: Sequence[elbv2.ApplicationTargetGroup],
) -> list[cloudwatch.Alarm]:
    """p99 latency (internet-facing only) and the 5xx share, each bad in three of five minutes;
    unhealthy targets in any of the groups for three minutes."""
    metrics = lb.alb.metrics
    period = Duration.minutes(1)
    latency: list[tuple[str, str, cloudwatch.IMetric, float]] = (
        [
            (
                "p99-latency",
                f"{service}'s p99 response time above {P99_LATENCY_SECONDS} s "
                "(the load balancer's TargetResponseTime)",
                metrics.target_response_time(statistic="p99", period=period),
                P99_LATENCY_SECONDS,
            )
        ]
        if lb.external
        else []
    )
    five_xx = (
        "5xx-rate",
        f"more than {FIVE_XX_PERCENT}% of {service}'s answers are 5xx",
        cloudwatch.MathExpression(
            expression=(
                "IF(FILL(requests, 0) > 0, "
                "100 * (FILL(target, 0) + FILL(elb, 0)) / FILL(requests, 0), 0)"
            ),
            using_metrics={
                "target": metrics.http_code_target(
                    elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=period
                ),
                "elb": metrics.http_code_elb(elbv2.HttpCodeElb.ELB_5XX_COUNT, period=period),
                "requests": metrics.request_count(period=period),
            },
            label="5xx answers, % of requests",
            period=period,
        ),
        FIVE_XX_PERCENT,
    )
    created = [
        alarms.alarm(
            id,
            name=id,
            description=description,
            metric=metric,
            threshold=threshold,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=5,
            datapoints_to_alarm=3,
        )
        for id, description, metric, threshold in (*latency, five_xx)
    ]
    created.append(
        alarms.alarm(
            "unhealthy-hosts",
            name="unhealthy-hosts",
            description=f"{service} has targets failing the health check",
            metric=cloudwatch.MathExpression(
                expression=" + ".join(f"FILL(tg{index}, 0)" for index in range(len(target_groups))),
                using_metrics={
                    # By hand: the green group joins the listener only during a deployment.
                    f"tg{index}": cloudwatch.Metric(
                        namespace="AWS/ApplicationELB",
                        metric_name="UnHealthyHostCount",
                        dimensions_map={
                            "LoadBalancer": lb.alb.load_balancer_full_name,
                            "TargetGroup": group.target_group_full_name,
                        },
                        statistic="Maximum",
                        period=period,
                    )
                    for index, group in enumerate(target_groups)
                },
                label="unhealthy targets",
                period=period,
            ),
            threshold=1,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=3,
            datapoints_to_alarm=3,
        )
    )
    return created
