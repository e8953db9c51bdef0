"""A service's auto scaling, from the spec's ``[scaling]`` table: target tracking on CPU and
memory, and on requests or backlog per running task (metric math)."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.alarms import running_tasks
from infra.service_config import ServiceProps
from suite_contract.spec import QueueTrigger, ScalingSpec

__all__ = ["Scaling"]

# Per running task; with none running, the whole count (so a service at zero scales out).
REQUESTS_PER_TASK = "IF(FILL(tasks, 0) > 0, requests / FILL(tasks, 0), requests)"
BACKLOG_PER_TASK = "IF(FILL(tasks, 0) > 0, FILL(visible, 0) / FILL(tasks, 0), FILL(visible, 0))"


class Scaling:
    """``count``, the service's scalable task count, and a target tracking policy per target
    the spec sets. Every policy scales in only as far as every other lets it (target tracking
    takes the largest count any policy asks for)."""

    def __init__(
        self,
        scope: Construct,
        props: ServiceProps,
        *,
        scaling: ScalingSpec,
        service: ecs.BaseService,
    ) -> None:
        self.scope = scope
        self.config, self.platform, self.spec = props.config, props.platform, props.spec
        self.count = count = service.auto_scale_task_count(
            min_capacity=scaling.min_count, max_capacity=scaling.max_count
        )
        in_cooldown = Duration.seconds(scaling.scale_in_cooldown)
        out_cooldown = Duration.seconds(scaling.scale_out_cooldown)
        for id, scale_on, target in (
            ("Cpu", count.scale_on_cpu_utilization, scaling.cpu_target),
            ("Memory", count.scale_on_memory_utilization, scaling.memory_target),
        ):
            if target is not None:
                scale_on(
                    id,
                    target_utilization_percent=target,
                    scale_in_cooldown=in_cooldown,
                    scale_out_cooldown=out_cooldown,
                )
        if scaling.requests_per_task is not None:
            self._scale_on_requests(count, scaling)
        if scaling.backlog_per_task is not None:
            trigger = self.spec.trigger
            assert isinstance(trigger, QueueTrigger)
            queue = self.platform.queues[trigger.queue]
            self._scale_on_backlog(count, queue, scaling)

    def _scale_on_requests(self, count: ecs.ScalableTaskCount, scaling: ScalingSpec) -> None:
        """Target tracking on the load balancer's requests per running task.

        Not the predefined ALBRequestCountPerTarget: that metric is bound to one target group,
        and a blue/green deployment moves the traffic to the other one, after which it would
        read zero and scale the service in. The load balancer's count follows the traffic.
        """
        lb = self.platform.load_balancers[self.spec.name]
        self._track_per_task(
            count,
            scaling,
            id="Requests",
            name="requests-per-task",
            target=scaling.requests_per_task or 0,
            load=("requests", "AWS/ApplicationELB", "RequestCount", "Sum"),
            dimensions={"LoadBalancer": lb.alb.load_balancer_full_name},
            expression=REQUESTS_PER_TASK,
            label="requests per task per minute",
        )

    def _scale_on_backlog(
        self, count: ecs.ScalableTaskCount, queue: sqs.IQueue, scaling: ScalingSpec
    ) -> None:
        """Target tracking on visible messages per running task (metric math, no Lambda).

        The target is the backlog one task clears within the acceptable latency. With no task
        running the expression is the backlog itself, so a first message scales a service at
        zero out at once, and a burst scales out before any CPU moves.
        """
        self._track_per_task(
            count,
            scaling,
            id="Backlog",
            name="backlog-per-task",
            target=scaling.backlog_per_task or 1,
            load=("visible", "AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum"),
            dimensions={"QueueName": queue.queue_name},
            expression=BACKLOG_PER_TASK,
            label="visible messages per running task",
        )

    def _track_per_task(
        self,
        count: ecs.ScalableTaskCount,
        scaling: ScalingSpec,
        *,
        id: str,
        name: str,
        target: float,
        load: tuple[str, str, str, str],
        dimensions: Mapping[str, str],
        expression: str,
        label: str,
    ) -> None:
        """A target tracking policy on ``load`` divided by the running tasks (metric math).

        ``load`` is (query id, namespace, metric name, statistic); ``expression`` divides it by
        ``tasks``. L1: the L2 target tracking takes no metric math.
        """
        policy = appscaling.CfnScalingPolicy
        running = running_tasks(self.config.prefix, self.spec.name)
        scalable = count.node.find_child("Target")
        assert isinstance(scalable, appscaling.ScalableTarget)
        query_id, namespace, metric_name, stat = load

        def query(
            query_id: str, namespace: str, metric_name: str, stat: str, dims: Mapping[str, str]
        ) -> appscaling.CfnScalingPolicy.TargetTrackingMetricDataQueryProperty:
            return policy.TargetTrackingMetricDataQueryProperty(
                id=query_id,
                metric_stat=policy.TargetTrackingMetricStatProperty(
                    metric=policy.TargetTrackingMetricProperty(
                        namespace=namespace,
                        metric_name=metric_name,
                        dimensions=[
                            policy.TargetTrackingMetricDimensionProperty(name=key, value=value)
                            for key, value in dims.items()
                        ],
                    ),
                    stat=stat,
                ),
                return_data=False,
            )

        policy(
            self.scope,
            id,
            policy_name=f"{self.config.prefix}-{self.spec.name}-{name}",
            policy_type="TargetTrackingScaling",
            scaling_target_id=scalable.scalable_target_id,
            target_tracking_scaling_policy_configuration=policy.TargetTrackingScalingPolicyConfigurationProperty(
                target_value=target,
                scale_in_cooldown=scaling.scale_in_cooldown,
                scale_out_cooldown=scaling.scale_out_cooldown,
                customized_metric_specification=policy.CustomizedMetricSpecificationProperty(
                    metrics=[
                        query(query_id, namespace, metric_name, stat, dimensions),
                        query(
                            "tasks",
                            running.namespace,
                            running.metric_name,
                            "Average",
                            running.dimensions or {},
                        ),
                        policy.TargetTrackingMetricDataQueryProperty(
                            id="per_task", expression=expression, label=label, return_data=True
                        ),
                    ]
                ),
            ),
        )
