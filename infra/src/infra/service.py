"""One stack per service, built from its ``service.toml``: task definition, role, logs, the ECS
service (or the schedules), its listener and target groups, scaling, deployment and alarms.

Why a stack per service rather than one services stack: a deploy, a failed update's rollback or
a deletion touches one service only, each service's template stays far from CloudFormation's
limits as services are added, and adding a folder under ``services/`` adds a stack without
changing the others. What they share lives in the platform stack.

Each part is built by its own module, into this stack (so the logical ids are the stack's own).
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack, TimeZone
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.alarms import AlarmTopic
from infra.checks import SSE_SQS, acknowledge_nag, acknowledge_wildcard, skip_checkov
from infra.config import EnvConfig
from infra.deployment import deployment_for
from infra.ecs_service import EcsService, capacity_strategies
from infra.edge import ListenerRules, alias_record
from infra.names import pascal
from infra.platform import PlatformStack
from infra.roles import TaskRole, service_role
from infra.scaling import Scaling
from infra.schedules import load_schedules, run_command
from infra.service_alarms import below_desired_alarm, load_balancer_alarms
from infra.service_config import ServiceProps, service_parameters
from infra.task_definition import APP_CONTAINER, ServiceTaskDefinition
from servicekit.spec import Exposure, ScheduleTrigger, ServiceSpec

__all__ = ["ServiceStack"]

SCHEDULE_RETRIES = 3
SCHEDULE_MAX_EVENT_AGE = Duration.minutes(15)


class ServiceStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvConfig,
        platform: PlatformStack,
        spec: ServiceSpec,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id, **kwargs)
        self.config = config
        self.platform = platform
        self.spec = spec
        props = ServiceProps(config=config, platform=platform, spec=spec)
        self.alarms = AlarmTopic(
            self, topic=platform.alarm_topic, name_prefix=f"{config.prefix}-{spec.name}"
        )
        # By name, not by reference: the ARNs this stack writes (task protection, the
        # scheduler's grants) stay literal, and the platform's outputs stay few.
        self.cluster = ecs.Cluster.from_cluster_attributes(
            self, "Cluster", cluster_name=config.prefix, vpc=platform.vpc
        )
        self.add_stack_dependency(platform)

        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/{config.app}/{config.env}/{spec.name}",
            retention=config.log_retention,
            encryption_key=platform.key,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # The platform's, where the groups that admit it (database, callers) are written.
        self.security_group = platform.task_security_groups[spec.name]
        self.task_role = TaskRole(self, props).role
        self.task_definition = ServiceTaskDefinition(
            self,
            props,
            task_role=self.task_role,
            log_group=self.log_group,
        ).task_definition
        service_parameters(self, config=config, spec=spec)

        trigger = spec.trigger
        if isinstance(trigger, ScheduleTrigger):
            self._schedules(trigger)
        else:
            self.service = self._service(props)

    def _service(self, props: ServiceProps) -> ecs.BaseService:
        """The ECS service, deployed the spec's way, behind its load balancer if exposed,
        scaled by the spec's ``[scaling]``."""
        config, platform, spec = self.config, self.platform, self.spec
        deployment = deployment_for(self, props)
        service = EcsService(
            self,
            props,
            cluster=self.cluster,
            task_definition=self.task_definition,
            security_group=self.security_group,
            deployment=deployment.settings,
        ).service
        if spec.exposure is not Exposure.NONE:
            lb = platform.load_balancers[spec.name]
            routing = deployment.route(service)
            if lb.external:
                ListenerRules(
                    self,
                    spec=spec,
                    auth=platform.auth.get(spec.name),
                    listener=routing.listener,
                    steady_target=routing.steady_target,
                )
            deployment.roll_back_on(
                routing,
                load_balancer_alarms(
                    self.alarms, service=spec.name, lb=lb, target_groups=routing.target_groups
                ),
            )
            alias_record(self, config=config, service=spec.name, lb=lb)
        below_desired_alarm(self.alarms, cluster=config.prefix, service=spec.name)
        if spec.scaling is not None:
            Scaling(self, props, scaling=spec.scaling, service=service)
        return service

    # -- schedules --------------------------------------------------------------------------

    def _schedules(self, trigger: ScheduleTrigger) -> None:
        """One EventBridge Scheduler schedule per registry job, each starting one task."""
        config, spec, platform = self.config, self.spec, self.platform
        self.schedule_dlq = sqs.Queue(
            self,
            "SchedulesDlq",
            queue_name=f"{config.prefix}-{spec.name}-schedules-dlq",
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        acknowledge_nag(self.schedule_dlq, "AwsSolutions-SQS3", "this queue is a dead-letter queue")
        skip_checkov(self.schedule_dlq, "CKV_AWS_27", SSE_SQS)
        role = service_role(
            self,
            "SchedulerRole",
            config=config,
            service="scheduler",
            purpose=f"EventBridge Scheduler starts {spec.name}'s tasks",
        )
        acknowledge_wildcard(
            role,
            self.format_arn(service="ecs", resource="task", resource_name=f"{config.prefix}/*"),
            "EventBridge Scheduler tags the tasks it starts (ecs:TagResource): their ids are "
            "not known before; limited to this cluster",
        )
        group = scheduler.ScheduleGroup(
            self, "ScheduleGroup", schedule_group_name=f"{config.prefix}-{spec.name}"
        )
        self.jobs = load_schedules(trigger)
        for job in self.jobs:
            command = run_command(trigger, job.name)
            target_props: dict[str, Any] = {
                "task_definition": self.task_definition,
                "security_groups": [self.security_group],
                "vpc_subnets": platform.private_subnets,
                "capacity_provider_strategies": capacity_strategies(config.prefix, spec),
                "task_count": spec.task.desired_count,
                "propagate_tags": True,
                "input": scheduler.ScheduleTargetInput.from_object(
                    {"containerOverrides": [{"name": APP_CONTAINER, "command": command}]}
                ),
                "dead_letter_queue": self.schedule_dlq,
                "retry_attempts": SCHEDULE_RETRIES,
                "max_event_age": SCHEDULE_MAX_EVENT_AGE,
                "role": role,
            }
            target = (
                scheduler_targets.EcsRunFargateTask(self.cluster, **target_props)
                if spec.fargate
                else scheduler_targets.EcsRunEc2Task(self.cluster, **target_props)
            )
            scheduler.Schedule(
                self,
                f"Job{pascal(job.name.replace('.', '-'))}",
                schedule_name=job.name,
                schedule_group=group,
                schedule=scheduler.ScheduleExpression.expression(
                    job.expression, TimeZone.of(job.timezone)
                ),
                target=target,
                description=(job.description or job.name)[:512],
                time_window=scheduler.TimeWindow.off(),
            )
        self.alarms.alarm(
            "schedules-dlq",
            name="schedules-dlq",
            description=f"{spec.name}: a schedule could not start its task after retries",
            metric=self.schedule_dlq.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(5), statistic="Maximum"
            ),
            threshold=1,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
        )
        # The runtime writes one EMF line per finished run, with its status as a property.
        failures = logs.MetricFilter(
            self,
            "RunFailures",
            log_group=self.log_group,
            filter_pattern=logs.FilterPattern.all(
                logs.FilterPattern.number_value("$.ScheduledRuns", "=", 1),
                logs.FilterPattern.string_value("$.status", "!=", "succeeded"),
            ),
            metric_namespace=f"{config.app}/{config.env}",
            metric_name=f"{pascal(spec.name)}RunFailures",
            metric_value="1",
            default_value=0,
        )
        self.alarms.alarm(
            "run-failures",
            name="run-failures",
            description=f"a {spec.name} job run failed, timed out or was interrupted",
            metric=failures.metric(statistic="Sum", period=Duration.minutes(5)),
            threshold=1,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
        )
