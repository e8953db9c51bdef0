"""One CloudWatch dashboard per environment: traffic, queues, tasks, capacity, the database."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_rds as rds
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.alarms import running_tasks
from infra.capacity import capacity_provider_name
from infra.edge import LoadBalancer, waf_blocked
from suite_contract.spec import CapacityProvider

__all__ = ["Dashboard"]


def _graph(title: str, metrics: Sequence[cloudwatch.IMetric]) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(title=title, left=list(metrics), width=8, height=6)


class Dashboard:
    """``dashboard``: three graphs a row, in the order of the arguments."""

    def __init__(
        self,
        scope: Construct,
        *,
        prefix: str,
        region: str,
        load_balancers: Mapping[str, LoadBalancer],
        queues: Mapping[str, sqs.IQueue],
        dead_letter_queues: Mapping[str, sqs.IQueue],
        services: Iterable[str],
        capacity_providers: Iterable[CapacityProvider],
        database: rds.DatabaseInstance,
    ) -> None:
        minute = Duration.minutes(1)
        widgets: list[cloudwatch.IWidget] = []
        for name, lb in load_balancers.items():
            metrics = lb.alb.metrics
            widgets += [
                _graph(f"{name}: requests", [metrics.request_count(period=minute)]),
                _graph(
                    f"{name}: errors",
                    [
                        metrics.http_code_target(elbv2.HttpCodeTarget.TARGET_5XX_COUNT),
                        metrics.http_code_elb(elbv2.HttpCodeElb.ELB_5XX_COUNT),
                        metrics.http_code_target(elbv2.HttpCodeTarget.TARGET_4XX_COUNT),
                    ]
                    + ([waf_blocked(prefix, region, name, minute)] if lb.external else []),
                ),
                _graph(
                    f"{name}: latency",
                    [
                        metrics.target_response_time(statistic=stat, period=minute)
                        for stat in ("p50", "p99")
                    ],
                ),
            ]
        for name, queue in queues.items():
            dlq = dead_letter_queues[name]
            widgets += [
                _graph(
                    f"queue {name}: depth",
                    [
                        queue.metric_approximate_number_of_messages_visible(period=minute),
                        queue.metric_approximate_number_of_messages_not_visible(period=minute),
                    ],
                ),
                _graph(
                    f"queue {name}: oldest message (s)",
                    [queue.metric_approximate_age_of_oldest_message(period=minute)],
                ),
                _graph(
                    f"queue {name}: dead letters",
                    [dlq.metric_approximate_number_of_messages_visible(period=minute)],
                ),
            ]
        widgets += [
            _graph(
                "running tasks per service",
                [running_tasks(prefix, name, label=name) for name in services],
            ),
            _graph(
                "EC2 capacity providers: reservation %",
                [
                    cloudwatch.Metric(
                        namespace="AWS/ECS/ManagedScaling",
                        metric_name="CapacityProviderReservation",
                        dimensions_map={
                            "ClusterName": prefix,
                            "CapacityProviderName": capacity_provider_name(prefix, provider),
                        },
                        statistic="Average",
                        period=minute,
                        label=provider.value,
                    )
                    for provider in capacity_providers
                ],
            ),
            _graph(
                "database",
                [
                    database.metric_cpu_utilization(period=minute),
                    database.metric_database_connections(period=minute),
                ],
            ),
            _graph(
                "database: free storage",
                [database.metric_free_storage_space(period=minute)],
            ),
        ]
        self.dashboard = cloudwatch.Dashboard(
            scope,
            "Dashboard",
            dashboard_name=prefix,
            widgets=[widgets[index : index + 3] for index in range(0, len(widgets), 3)],
        )
