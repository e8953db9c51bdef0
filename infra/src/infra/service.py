"""One stack per service, built from its ``service.toml``: task definition, role, logs, the ECS
service, its listener and target groups, scaling, deployment and alarms (and a scheduled
service's schedules: :mod:`infra.schedules`).

Why a stack per service rather than one services stack: a deploy, a failed update's rollback or
a deletion touches one service only, each service's template stays far from CloudFormation's
limits as services are added, and adding a folder under ``services/`` adds a stack without
changing the others. What they share lives in the platform stack.

Each part is built by its own module, into this stack (so the logical ids are the stack's own).
"""

from __future__ import annotations

from aws_cdk import Environment, RemovalPolicy, Stack
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.alarms import AlarmTopic
from infra.config import EnvConfig
from infra.deployment import deployment_for
from infra.ecs_service import EcsService
from infra.edge import ListenerRules, alias_record
from infra.names import pascal
from infra.platform import PlatformStack
from infra.roles import TaskRole, service_role
from infra.scaling import Scaling
from infra.schedules import ScheduledJobs
from infra.service_alarms import below_desired_alarm, load_balancer_alarms
from infra.service_config import ServiceProps, service_parameters
from infra.task_definition import APP_CONTAINER, ServiceTaskDefinition
from suite_contract.spec import EnvironmentNames, Exposure, ScheduleTrigger, ServiceSpec

__all__ = ["ServiceStack"]


class ServiceStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvConfig,
        platform: PlatformStack,
        spec: ServiceSpec,
        env: Environment,
        description: str,
    ) -> None:
        super().__init__(scope, id, env=env, description=description)
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

        self.service = self._service(props)
        self.scheduled_jobs = (
            self._scheduled_jobs(spec.trigger)
            if isinstance(spec.trigger, ScheduleTrigger)
            else None
        )

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

    def _scheduled_jobs(self, trigger: ScheduleTrigger) -> ScheduledJobs:
        """A scheduled service's firings queue and schedules; its app reads the queue's URL."""
        config, spec = self.config, self.spec
        jobs = ScheduledJobs(
            self,
            names=EnvironmentNames(config.app, config.env),
            service=spec.name,
            trigger=trigger,
            stop_timeout=spec.task.stop_timeout,
            role=service_role(
                self,
                "SchedulerRole",
                config=config,
                service="scheduler",
                purpose=f"EventBridge Scheduler fires {spec.name}'s jobs",
            ),
            consumer=self.task_role,
            log_group=self.log_group,
            metric_namespace=f"{config.app}/{config.env}",
            metric_name=f"{pascal(spec.name)}RunFailures",
            alarms=self.alarms,
        )
        app = self.task_definition.find_container(APP_CONTAINER)
        assert app is not None
        app.add_environment("FIRINGS_QUEUE_URL", jobs.firings.queue_url)
        return jobs
