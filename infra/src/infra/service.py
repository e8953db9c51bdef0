"""One stack per service, built from its ``service.toml``: task definition, role, logs, the ECS
service, its listener and target groups, scaling, deployment and alarms (and a scheduled
service's schedules: :mod:`infra.schedules`).

Why a stack per service rather than one services stack: a deploy, a failed update's rollback or
a deletion touches one service only, each service's template stays far from CloudFormation's
limits as services are added, and adding a folder under ``services/`` adds a stack without
changing the others. What they share lives in the platform stack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aws_cdk import Annotations, ArnFormat, Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_route53_targets as route53_targets
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_servicediscovery as servicediscovery
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from infra.checks import acknowledge_nag, acknowledge_wildcard, skip_checkov
from infra.config import EnvConfig
from infra.platform import HTTPS_PORT, LoadBalancer, PlatformStack, _pascal
from infra.registry import ECR_PUBLIC_PREFIX, repository_name
from infra.schedules import ScheduledJobs
from servicekit.spec import (
    DeploymentStrategy,
    EnvironmentNames,
    Exposure,
    HttpTrigger,
    QueueTrigger,
    ScalingSpec,
    ScheduleTrigger,
    ServiceSpec,
)

__all__ = ["APP_CONTAINER", "OTLP_ENDPOINT", "ServiceStack"]

APP_CONTAINER = "app"
COLLECTOR_CONTAINER = "otel-collector"
OTLP_HTTP_PORT = 4318
OTLP_ENDPOINT = f"http://127.0.0.1:{OTLP_HTTP_PORT}"
# Traces only, to X-Ray: the services' metrics are EMF lines in their logs, not OTLP. The
# receiver listens on the task's loopback (awsvpc: the containers share it).
COLLECTOR_CONFIG = f"""
extensions:
  health_check:
    endpoint: 127.0.0.1:13133
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{OTLP_HTTP_PORT}
processors:
  batch/traces:
    timeout: 1s
    send_batch_size: 50
exporters:
  awsxray:
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch/traces]
      exporters: [awsxray]
"""
# Fail the api's 5xx alarm above this share of requests over five minutes.
FIVE_XX_PERCENT = 5
# An internet-facing service's p99: a request path's budget (the api answers from one database
# query and one SQS send, each with its own timeouts well under this).
P99_LATENCY_SECONDS = 1.0
BELOW_DESIRED_MINUTES = 10
# Per running task; with none running, the whole count (so a service at zero scales out).
# ECS Exec's SSM agent writes under these (aws/containers-roadmap#1359): task volumes, since the
# root filesystem is read-only. Volume name: mount path.
EXEC_AGENT_PATHS = {
    "ssm-managed-agents": "/managed-agents",
    "ssm-lib": "/var/lib/amazon/ssm",
    "ssm-log": "/var/log/amazon/ssm",
}
REQUESTS_PER_TASK = "IF(FILL(tasks, 0) > 0, requests / FILL(tasks, 0), requests)"
BACKLOG_PER_TASK = "IF(FILL(tasks, 0) > 0, FILL(visible, 0) / FILL(tasks, 0), FILL(visible, 0))"
# Where the image keeps the RDS CA bundle (the Dockerfile downloads it): every connection to
# the database verifies the server's certificate and name against it.
RDS_CA_BUNDLE = "/etc/ssl/certs/rds-global-bundle.pem"
# External listener rule priorities: refusals first, then token checks, then (ECS-native
# blue/green) the production rule ECS moves between the colours.
PRIVATE_PATHS_PRIORITY = 1
TOKEN_PATHS_PRIORITY = 20
PRODUCTION_RULE_PRIORITY = 100
# An ALB rule condition takes at most five values.
_VALUES_PER_CONDITION = 5


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
        self.alarms: list[cloudwatch.Alarm] = []
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
        self.task_role = self._task_role()
        self.task_definition = self._task_definition()
        self._parameters()

        self.service = self._service()
        self._below_desired_alarm()
        if spec.scaling is not None:
            self._scaling(spec.scaling)
        if isinstance(spec.trigger, ScheduleTrigger):
            self.scheduled_jobs = ScheduledJobs(
                self,
                "Schedules",
                names=EnvironmentNames(config.app, config.env),
                service=spec.name,
                trigger=spec.trigger,
                stop_timeout=spec.task.stop_timeout,
                role=self._role(
                    "SchedulerRole", "scheduler", f"EventBridge Scheduler fires {spec.name}'s jobs"
                ),
                consumer=self.task_role,
                log_group=self.log_group,
                metric_namespace=f"{config.app}/{config.env}",
                metric_name=f"{_pascal(spec.name)}RunFailures",
                alarm=self._alarm,
            )
            app = self.task_definition.find_container(APP_CONTAINER)
            assert app is not None
            app.add_environment("FIRINGS_QUEUE_URL", self.scheduled_jobs.firings.queue_url)

    # -- identity and configuration ---------------------------------------------------------

    def _task_role(self) -> iam.Role:
        """Least privilege: its own parameters, its secrets, its queues, traces."""
        config, spec, platform = self.config, self.spec, self.platform
        role = self._role("TaskRole", "ecs-tasks", f"what {spec.name}'s code may call")
        paths = [config.parameter_path(prefix) for prefix in spec.config.parameters]
        if paths:
            role.add_to_policy(
                iam.PolicyStatement(
                    sid="OwnParameters",
                    actions=["ssm:GetParametersByPath", "ssm:GetParameter", "ssm:GetParameters"],
                    resources=[
                        arn
                        for path in paths
                        for arn in (
                            self.format_arn(
                                service="ssm", resource="parameter", resource_name=path[1:]
                            ),
                            self.format_arn(
                                service="ssm", resource="parameter", resource_name=f"{path[1:]}/*"
                            ),
                        )
                    ],
                )
            )
        secrets = [self._secret(name).secret_arn for name in spec.config.secrets.values()]
        if secrets:
            role.add_to_policy(
                iam.PolicyStatement(
                    sid="OwnSecrets",
                    actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                    resources=secrets,
                )
            )
        if paths or secrets:
            # SecureString parameters and the secrets are encrypted with the environment key.
            role.add_to_policy(
                iam.PolicyStatement(
                    sid="DecryptThroughSsmAndSecrets",
                    actions=["kms:Decrypt"],
                    resources=[platform.key.key_arn],
                    conditions={
                        "StringEquals": {
                            "kms:ViaService": [
                                f"secretsmanager.{config.region}.amazonaws.com",
                                f"ssm.{config.region}.amazonaws.com",
                            ]
                        }
                    },
                )
            )
        for queue in spec.config.queues.values():
            platform.queues[queue].grant_send_messages(role)
        for queue in spec.config.dead_letters:
            platform.dead_letter_queues[queue].grant_consume_messages(role)
        if isinstance(spec.trigger, QueueTrigger):
            platform.queues[spec.trigger.queue].grant_consume_messages(role)
            # The consumer protects a busy task from scale-in through the ECS agent.
            tasks_arn = self.format_arn(
                service="ecs", resource="task", resource_name=f"{config.prefix}/*"
            )
            role.add_to_policy(
                iam.PolicyStatement(
                    sid="OwnTaskProtection",
                    actions=["ecs:UpdateTaskProtection", "ecs:GetTaskProtection"],
                    resources=[tasks_arn],
                )
            )
            acknowledge_wildcard(
                role,
                tasks_arn,
                "task ids are not known before the tasks start; limited to this cluster",
            )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="Traces",
                actions=[
                    "xray:PutTraceSegments",
                    "xray:PutTelemetryRecords",
                    "xray:GetSamplingRules",
                    "xray:GetSamplingTargets",
                    "xray:GetSamplingStatisticSummaries",
                ],
                resources=["*"],
            )
        )
        acknowledge_nag(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray's trace and sampling actions support no resource-level permissions",
        )
        for path in paths:
            acknowledge_wildcard(
                role,
                self.format_arn(service="ssm", resource="parameter", resource_name=f"{path[1:]}/*"),
                "the service's own Parameter Store prefix: settings and flags under it",
            )
        if config.ecs_exec:
            self._exec_sessions(role)
        return role

    def _exec_sessions(self, role: iam.Role) -> None:
        """What the SSM agent in a task needs for an ECS Exec session (the cluster's settings).

        The channel actions (``ssmmessages:*Channel``, no resource-level permissions) are added
        by ECS for a service with execute-command; these are the cluster's session key and log
        group, which an imported cluster does not tell it.
        """
        platform = self.platform
        # By name: a literal ARN, no reference to the platform's output.
        exec_logs = self.format_arn(
            service="logs",
            resource="log-group",
            resource_name=platform.exec_logs_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ExecSessionKey", actions=["kms:Decrypt"], resources=[platform.key.key_arn]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ExecSessionLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[exec_logs, f"{exec_logs}:log-stream:*"],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ExecSessionLogGroups", actions=["logs:DescribeLogGroups"], resources=["*"]
            )
        )
        acknowledge_wildcard(
            role,
            f"{exec_logs}:log-stream:*",
            "an ECS Exec session writes a stream of its own name in the exec log group",
        )

    def _role(self, id: str, service: str, purpose: str) -> iam.Role:
        """A role ``service`` assumes on behalf of this account only (no confused deputy)."""
        return iam.Role(
            self,
            id,
            assumed_by=iam.ServicePrincipal(
                f"{service}.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": self.config.account}},
            ),
            description=f"{self.config.prefix}: {purpose}",
        )

    def _secret(self, name: str) -> secretsmanager.ISecret:
        secrets = {"db": self.platform.db_secret}
        try:
            return secrets[name]
        except KeyError:
            raise ValueError(
                f"{self.spec.name}: secret {name!r} is not one the platform provides "
                f"({sorted(secrets)})"
            ) from None

    def _environment(self) -> dict[str, str]:
        config, spec, platform = self.config, self.spec, self.platform
        environment = {
            "APP_NAME": config.app,
            "APP_ENV": config.env,
            "SERVICE_NAME": spec.name,
            "AWS_REGION": config.region,
            "TRACING_ENABLED": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": OTLP_ENDPOINT,
            "OTEL_SERVICE_NAME": spec.name,
            # The one stop figure (the container's stopTimeout below): a service sizes its
            # shutdown steps from it instead of keeping a copy.
            "STOP_TIMEOUT": str(spec.task.stop_timeout),
        }
        # Secrets by id, never by value: the services fetch them through servicekit's cache,
        # which is how a rotation reaches running tasks without a redeploy.
        environment |= {
            variable: self._secret(name).secret_arn
            for variable, name in spec.config.secrets.items()
        }
        environment |= {
            variable: platform.queues[queue].queue_url
            for variable, queue in spec.config.queues.items()
        }
        if isinstance(spec.trigger, QueueTrigger):
            environment.setdefault("QUEUE_URL", platform.queues[spec.trigger.queue].queue_url)
        if spec.uses_database:
            environment |= {
                "DATABASE__SSLMODE": "verify-full",
                "DATABASE__SSLROOTCERT": RDS_CA_BUNDLE,
            }
            if spec.database is not None:
                # The figure the platform's connection budget counted.
                environment["DATABASE__POOL_SIZE"] = str(spec.database.pool_size)
        if isinstance(spec.trigger, HttpTrigger):
            environment |= {
                # gunicorn's worker count, the processes the connection budget counted.
                "WEB_CONCURRENCY": str(spec.task.processes),
                # Only the load balancers (in the VPC) may set X-Forwarded-For and -Proto.
                "FORWARDED_ALLOW_IPS": platform.vpc.vpc_cidr_block,
            }
        if spec.exposure is Exposure.EXTERNAL:
            # The WAF rule's figure: one limit, checked at the edge and in the service.
            environment["MAX_BODY_BYTES"] = str(spec.edge.max_body_bytes)
        for callee in spec.calls:
            # Every task of the callee (Cloud Map's multivalue answer) and any one of them
            # (the internal load balancer's listener, on the callee's port).
            variable = callee.upper().replace("-", "_")
            lb = platform.load_balancers[callee]
            environment |= {
                f"{variable}__DISCOVERY_NAME": f"{callee}.{platform.namespace.namespace_name}",
                f"{variable}__ALB_URL": f"http://{lb.alb.load_balancer_dns_name}:{lb.port}",
            }
        auth = platform.auth.get(spec.name)
        if auth is not None:
            environment |= {
                "AUTH__ISSUER": auth.issuer,
                "AUTH__AUDIENCES": self.to_json_string(auth.client_ids),
                "AUTH__SCOPE_PREFIX": auth.scope_prefix,
            }
        return environment | spec.config.environment

    def _parameters(self) -> None:
        """The service's settings and flags' initial values, under its own prefix."""
        path = self.config.parameter_path(self.spec.name)
        values = dict(self.spec.config.settings)
        values |= {
            f"flags/{flag}": "true" if value else "false"
            for flag, value in self.spec.config.flags.items()
        }
        for key, value in sorted(values.items()):
            ssm.StringParameter(
                self,
                f"Param{_pascal(key.replace('/', '-'))}",
                parameter_name=f"{path}/{key}",
                string_value=value,
                description=f"{self.spec.name}: {key} (a deploy resets a hand-made change)",
            )

    # -- task definition --------------------------------------------------------------------

    def _task_definition(self) -> ecs.TaskDefinition:
        config, spec = self.config, self.spec
        execution_role = self._role(
            "ExecutionRole", "ecs-tasks", f"pulls {spec.name}'s images, writes its logs"
        )
        task_definition = ecs.TaskDefinition(
            self,
            "TaskDefinition",
            family=f"{config.prefix}-{spec.name}",
            compatibility=(
                ecs.Compatibility.FARGATE if spec.fargate else ecs.Compatibility.EC2_AND_FARGATE
            ),
            cpu=str(spec.task.cpu),
            memory_mib=str(spec.task.memory),
            network_mode=ecs.NetworkMode.AWS_VPC,
            task_role=self.task_role,
            execution_role=execution_role,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
            # The root filesystem is read-only: /tmp is a task volume (Fargate has no tmpfs), and
            # so are the paths the SSM agent ECS Exec injects writes to.
            volumes=[ecs.Volume(name=name) for name in ("tmp", *EXEC_AGENT_PATHS)],
        )
        # By name (the registry stack creates it): the image URI stays a literal in the template.
        repository = ecr.Repository.from_repository_name(
            self, "Repository", repository_name(config.app, spec.name)
        )
        if config.image_digests and spec.name not in config.image_digests:
            Annotations.of(self).add_warning_v2(
                "infra:imageTagFallback",
                f"imageDigests pins no image for {spec.name}: it runs the imageTag "
                f"{config.image_tag!r}, whatever it ran before",
            )
        logging = ecs.LogDrivers.aws_logs(
            stream_prefix=spec.name,
            log_group=self.log_group,
            # A slow log delivery must not block the process writing a line.
            mode=ecs.AwsLogDriverMode.NON_BLOCKING,
            max_buffer_size=Size.mebibytes(25),
        )
        collector = task_definition.add_container(
            COLLECTOR_CONTAINER,
            image=ecs.ContainerImage.from_registry(
                f"{config.account}.dkr.ecr.{config.region}.amazonaws.com/"
                f"{ECR_PUBLIC_PREFIX}/{config.otel_collector_image}"
            ),
            essential=False,  # losing traces must not stop the service
            memory_reservation_mib=64,
            readonly_root_filesystem=True,
            linux_parameters=self._no_capabilities("CollectorLinux"),
            user=spec.task.user,
            environment={"AOT_CONFIG_CONTENT": COLLECTOR_CONFIG},
            logging=logging,
        )
        Annotations.of(collector).acknowledge_warning(
            "@aws-cdk/aws-ecs:ecrImageRequiresPolicy",
            "the execution role's PullThroughCache statement grants the pull",
        )
        app = task_definition.add_container(
            APP_CONTAINER,
            # A digest renders as repository@sha256:..., the image `suite push` pushed.
            image=ecs.ContainerImage.from_ecr_repository(
                repository, tag=config.image_tag_or_digest(spec.name)
            ),
            essential=True,
            # The spec's command is the one place it is written.
            command=list(spec.command),
            user=spec.task.user,
            readonly_root_filesystem=True,
            # The init process reaps the ECS Exec agent's children.
            linux_parameters=self._no_capabilities("AppLinux", init_process=True),
            stop_timeout=Duration.seconds(spec.task.stop_timeout),
            environment=self._environment(),
            logging=logging,
            port_mappings=(
                [ecs.PortMapping(container_port=spec.port, name=spec.name)] if spec.port else None
            ),
            health_check=(
                ecs.HealthCheck(
                    command=[
                        "CMD",
                        "python3",
                        "-c",
                        "import urllib.request; urllib.request.urlopen("
                        f"'http://127.0.0.1:{spec.port}{spec.health_path}', timeout=2)",
                    ],
                    interval=Duration.seconds(15),
                    timeout=Duration.seconds(5),
                    retries=3,
                    start_period=Duration.seconds(30),
                )
                if spec.port and spec.health_path
                else None
            ),
        )
        app.add_mount_points(
            ecs.MountPoint(container_path="/tmp", source_volume="tmp", read_only=False),  # noqa: S108
            *(
                ecs.MountPoint(container_path=path, source_volume=volume, read_only=False)
                for volume, path in EXEC_AGENT_PATHS.items()
            ),
        )
        app.add_container_dependencies(
            ecs.ContainerDependency(
                container=collector, condition=ecs.ContainerDependencyCondition.START
            )
        )
        repository.grant_pull(execution_role)
        cache_arn = self.format_arn(
            service="ecr", resource="repository", resource_name=f"{ECR_PUBLIC_PREFIX}/*"
        )
        # The collector comes through the pull-through cache: its first pull creates the cache
        # repository, hence the two extra actions, limited to the cache's prefix.
        execution_role.add_to_policy(
            iam.PolicyStatement(
                sid="PullThroughCache",
                actions=[
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchImportUpstreamImage",
                    "ecr:CreateRepository",
                ],
                resources=[cache_arn],
            )
        )
        acknowledge_wildcard(
            execution_role,
            cache_arn,
            "the pull-through cache creates its repositories on first pull; limited to its prefix",
        )
        acknowledge_nag(
            execution_role,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken supports no resource-level permission",
        )
        acknowledge_nag(
            task_definition,
            "AwsSolutions-ECS2",
            "only non-secret configuration is in the environment: secrets are passed by id "
            "(DB_SECRET) and fetched at runtime, so rotation needs no redeploy",
        )
        return task_definition

    def _no_capabilities(self, id: str, *, init_process: bool = False) -> ecs.LinuxParameters:
        """Every Linux capability dropped: a non-root process on a high port needs none."""
        parameters = ecs.LinuxParameters(self, id, init_process_enabled=init_process or None)
        parameters.drop_capabilities(ecs.Capability.ALL)
        return parameters

    # -- the ECS service --------------------------------------------------------------------

    def _capacity(self) -> list[ecs.CapacityProviderStrategy]:
        return [
            ecs.CapacityProviderStrategy(
                capacity_provider=self.platform.capacity_provider_name(item.provider),
                base=item.base or None,
                weight=item.weight,
            )
            for item in self.spec.capacity
        ]

    def _service(self) -> ecs.BaseService:
        spec, platform = self.spec, self.platform
        deployment = spec.deployment
        blue_green = deployment.strategy is DeploymentStrategy.BLUE_GREEN
        codedeploy_controlled = deployment.through_codedeploy
        ecs_blue_green = blue_green and not codedeploy_controlled
        options: dict[str, Any] = {
            "cluster": self.cluster,
            "task_definition": self.task_definition,
            "service_name": spec.name,
            "desired_count": spec.task.desired_count,
            "security_groups": [self.security_group],
            "vpc_subnets": platform.private_subnets,
            "capacity_provider_strategies": self._capacity(),
            "min_healthy_percent": deployment.min_healthy_percent,
            "max_healthy_percent": deployment.max_percent,
            # ECS adds the ssmmessages channel statements to the task role; the task role's
            # ExecSessions statement covers the cluster's key and log group.
            "enable_execute_command": self.config.ecs_exec,
            "propagate_tags": ecs.PropagatedTagSource.SERVICE,
        }
        if codedeploy_controlled:
            # CodeDeploy rolls back by itself (failed deployment, alarms): no circuit breaker.
            options["deployment_controller"] = ecs.DeploymentController(
                type=ecs.DeploymentControllerType.CODE_DEPLOY
            )
        else:
            options["circuit_breaker"] = ecs.DeploymentCircuitBreaker(enable=True, rollback=True)
            if spec.port is not None:
                # CodeDeploy's task sets only know load balancers: Cloud Map for the others.
                options["cloud_map_options"] = ecs.CloudMapOptions(
                    cloud_map_namespace=platform.namespace,
                    name=spec.name,
                    dns_record_type=servicediscovery.DnsRecordType.A,
                    dns_ttl=Duration.seconds(10),
                )
        if ecs_blue_green:
            options["deployment_strategy"] = ecs.DeploymentStrategy.BLUE_GREEN
            options["bake_time"] = Duration.minutes(deployment.bake_minutes)
        if spec.exposure.value != "none":
            options["health_check_grace_period"] = Duration.seconds(60)
        service: ecs.BaseService
        if spec.fargate:
            service = ecs.FargateService(
                self, "Service", platform_version=ecs.FargatePlatformVersion.LATEST, **options
            )
        else:
            service = ecs.Ec2Service(
                self,
                "Service",
                placement_strategies=[
                    ecs.PlacementStrategy.spread_across(ecs.BuiltInAttributes.AVAILABILITY_ZONE),
                    ecs.PlacementStrategy.packed_by_memory(),
                ],
                **options,
            )
        if spec.exposure.value != "none":
            self._load_balancing(service, codedeploy_controlled, ecs_blue_green)
        return service

    def _load_balancing(
        self, service: ecs.BaseService, codedeploy_controlled: bool, ecs_blue_green: bool
    ) -> None:
        config, spec, platform = self.config, self.spec, self.platform
        assert spec.port is not None
        lb = platform.load_balancers[spec.name]
        balancing = spec.load_balancer
        target_groups = [
            elbv2.ApplicationTargetGroup(
                self,
                f"Tg{colour}",
                vpc=platform.vpc,
                port=spec.port,
                protocol=elbv2.ApplicationProtocol.HTTP,
                target_type=elbv2.TargetType.IP,
                deregistration_delay=Duration.seconds(balancing.deregistration_delay_seconds),
                health_check=elbv2.HealthCheck(
                    path=spec.health_path,
                    healthy_http_codes="200",
                    interval=Duration.seconds(balancing.health_interval_seconds),
                    timeout=Duration.seconds(balancing.health_timeout_seconds),
                    healthy_threshold_count=balancing.healthy_threshold,
                    unhealthy_threshold_count=balancing.unhealthy_threshold,
                ),
            )
            for colour in (
                ("Blue", "Green") if codedeploy_controlled or ecs_blue_green else ("Blue",)
            )
        ]
        blue = target_groups[0]
        listener = self._listener(
            lb,
            elbv2.ListenerAction.fixed_response(
                404, content_type="text/plain", message_body="not found"
            )
            if ecs_blue_green
            else elbv2.ListenerAction.forward([blue]),
        )
        if ecs_blue_green:
            green = target_groups[1]
            # ECS moves the weights of this rule between the two target groups.
            rule = elbv2.ApplicationListenerRule(
                self,
                "ProductionRule",
                listener=listener,
                priority=PRODUCTION_RULE_PRIORITY,
                conditions=[elbv2.ListenerCondition.path_patterns(["/*"])],
                action=elbv2.ListenerAction.weighted_forward(
                    [
                        elbv2.WeightedTargetGroup(target_group=blue, weight=100),
                        elbv2.WeightedTargetGroup(target_group=green, weight=0),
                    ]
                ),
            )
            target = service.load_balancer_target(
                container_name=APP_CONTAINER,
                container_port=spec.port,
                alternate_target=ecs.AlternateTarget(
                    "Alternate",
                    alternate_target_group=green,
                    production_listener=ecs.ListenerRuleConfiguration.application_listener_rule(
                        rule
                    ),
                ),
            )
            target.attach_to_application_target_group(blue)
            acknowledge_nag(
                service.node.find_child("AlternateRole"),
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                "AmazonECSInfrastructureRolePolicyForLoadBalancers]",
                "AWS's policy for ECS blue/green's listener changes, the one its documentation "
                "prescribes",
            )
        else:
            service.attach_to_application_target_group(blue)
        if lb.external:
            self._private_paths(listener)
            self._token_paths(listener, blue, ecs_blue_green)

        self._load_balancer_alarms(lb, target_groups)
        if codedeploy_controlled:
            self._codedeploy(service, listener, target_groups)
        if lb.external and config.hosted_zone_id:
            route53.ARecord(
                self,
                "Dns",
                zone=route53.HostedZone.from_hosted_zone_attributes(
                    self, "Zone", hosted_zone_id=config.hosted_zone_id, zone_name=config.domain
                ),
                record_name=spec.name,
                target=route53.RecordTarget.from_alias(route53_targets.LoadBalancerTarget(lb.alb)),
            )

    def _private_paths(self, listener: elbv2.ApplicationListener) -> None:
        """The spec's private paths (readiness, API docs) answer 404 to the internet.

        The load balancer's health checks and the tasks' own checks reach the targets directly,
        not through the listener, so they are unaffected.
        """
        for index, paths in enumerate(_path_chunks(self.spec.edge.private_paths)):
            elbv2.ApplicationListenerRule(
                self,
                f"PrivatePaths{index}",
                listener=listener,
                priority=PRIVATE_PATHS_PRIORITY + index,
                conditions=[elbv2.ListenerCondition.path_patterns(paths)],
                action=elbv2.ListenerAction.fixed_response(
                    404, content_type="application/json", message_body='{"detail":"Not Found"}'
                ),
            )

    def _token_paths(
        self,
        listener: elbv2.ApplicationListener,
        target_group: elbv2.ApplicationTargetGroup,
        ecs_blue_green: bool,
    ) -> None:
        """The load balancer verifies the access token on the spec's ``[auth] paths``.

        Defence in depth: ALB's ``jwt-validation`` action checks the signature (the pool's
        JWKS), ``iss``, ``exp`` and ``token_use`` before a request reaches a task; the service
        still verifies every token and its scopes itself. CloudFormation has the action; the
        CDK has no L2 for it yet, hence the L1 rule. ECS-native blue/green moves one production
        rule between the colours, which a second forwarding rule would not follow: there the
        service alone verifies.
        """
        spec = self.spec
        auth = self.platform.auth.get(spec.name)
        if auth is None or not spec.auth or not spec.auth.paths:
            return
        if ecs_blue_green:
            Annotations.of(self).add_warning_v2(
                "infra:albTokenCheckSkipped",
                f"{spec.name}: ECS-native blue/green manages a single production rule, so the "
                "load balancer does not verify tokens; the service does",
            )
            return
        for index, paths in enumerate(_path_chunks(spec.auth.paths)):
            elbv2.CfnListenerRule(
                self,
                f"TokenPaths{index}",
                listener_arn=listener.listener_arn,
                priority=TOKEN_PATHS_PRIORITY + index,
                conditions=[
                    elbv2.CfnListenerRule.RuleConditionProperty(
                        field="path-pattern",
                        path_pattern_config=elbv2.CfnListenerRule.PathPatternConfigProperty(
                            values=paths
                        ),
                    )
                ],
                actions=[
                    elbv2.CfnListenerRule.ActionProperty(
                        type="jwt-validation",
                        order=1,
                        jwt_validation_config=elbv2.CfnListenerRule.JwtValidationConfigProperty(
                            issuer=auth.issuer,
                            jwks_endpoint=auth.jwks_url,
                            additional_claims=[
                                elbv2.CfnListenerRule.JwtValidationActionAdditionalClaimProperty(
                                    name="token_use", format="single-string", values=["access"]
                                )
                            ],
                        ),
                    ),
                    elbv2.CfnListenerRule.ActionProperty(
                        type="forward", order=2, target_group_arn=target_group.target_group_arn
                    ),
                ],
            )

    def _listener(
        self, lb: LoadBalancer, default_action: elbv2.ListenerAction
    ) -> elbv2.ApplicationListener:
        """The production listener: its default action is what blue/green switches."""
        spec = self.spec
        assert spec.port is not None
        if lb.external:
            return elbv2.ApplicationListener(
                self,
                "Listener",
                load_balancer=lb.alb,
                port=HTTPS_PORT,
                protocol=elbv2.ApplicationProtocol.HTTPS,
                certificates=[elbv2.ListenerCertificate.from_arn(self.config.certificate_arn)],
                # TLS 1.2 and 1.3 only, with the post-quantum key exchange.
                ssl_policy=elbv2.SslPolicy.TLS13_12_PQ,
                default_action=default_action,
                open=False,  # the platform's group admits 443; no rule is added from here
            )
        listener = elbv2.ApplicationListener(
            self,
            "Listener",
            load_balancer=lb.alb,
            port=spec.port,
            protocol=elbv2.ApplicationProtocol.HTTP,
            default_action=default_action,
            open=False,
        )
        acknowledge_nag(listener, "AwsSolutions-ELB2", "access logs are set on the load balancer")
        skip_checkov(
            listener,
            "CKV_AWS_2",
            "internal ALB reachable only from its callers' security groups inside the VPC",
        )
        skip_checkov(listener, "CKV_AWS_103", "plain HTTP inside the VPC: no TLS policy applies")
        return listener

    def _codedeploy(
        self,
        service: ecs.BaseService,
        listener: elbv2.ApplicationListener,
        target_groups: Sequence[elbv2.ApplicationTargetGroup],
    ) -> None:
        """Blue/green through CodeDeploy: it shifts the listener between the two groups."""
        config, spec = self.config, self.spec
        application = codedeploy.EcsApplication(
            self, "DeployApplication", application_name=f"{config.prefix}-{spec.name}"
        )
        group = codedeploy.EcsDeploymentGroup(
            self,
            "DeploymentGroup",
            application=application,
            deployment_group_name=f"{config.prefix}-{spec.name}",
            service=service,
            blue_green_deployment_config=codedeploy.EcsBlueGreenDeploymentConfig(
                blue_target_group=target_groups[0],
                green_target_group=target_groups[1],
                listener=listener,
                termination_wait_time=Duration.minutes(spec.deployment.bake_minutes),
            ),
            deployment_config=codedeploy.EcsDeploymentConfig.from_ecs_deployment_config_name(
                self, "DeployConfig", spec.deployment.codedeploy_config
            ),
            # The circuit breaker's counterpart: failed, stopped or alarming deployments roll back.
            auto_rollback=codedeploy.AutoRollbackConfig(
                failed_deployment=True, stopped_deployment=True, deployment_in_alarm=True
            ),
            alarms=list(self.alarms),
        )
        acknowledge_nag(
            group.role,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AWSCodeDeployRoleForECS]",
            "AWS's policy for CodeDeploy's ECS blue/green, the one its documentation prescribes",
        )

    # -- scaling ----------------------------------------------------------------------------

    def _scaling(self, scaling: ScalingSpec) -> None:
        spec, platform = self.spec, self.platform
        count = self.service.auto_scale_task_count(
            min_capacity=scaling.min_count, max_capacity=scaling.max_count
        )
        cooldowns: dict[str, Any] = {
            "scale_in_cooldown": Duration.seconds(scaling.scale_in_cooldown),
            "scale_out_cooldown": Duration.seconds(scaling.scale_out_cooldown),
        }
        if scaling.cpu_target is not None:
            count.scale_on_cpu_utilization(
                "Cpu", target_utilization_percent=scaling.cpu_target, **cooldowns
            )
        if scaling.memory_target is not None:
            count.scale_on_memory_utilization(
                "Memory", target_utilization_percent=scaling.memory_target, **cooldowns
            )
        if scaling.requests_per_task is not None:
            self._scale_on_requests(count, scaling)
        if scaling.backlog_per_task is not None:
            assert isinstance(spec.trigger, QueueTrigger)
            queue = platform.queues[spec.trigger.queue]
            self._scale_on_backlog(count, queue, scaling)

    def _running_tasks(self) -> cloudwatch.Metric:
        """Container Insights' running task count of this service (absent while it has none)."""
        return cloudwatch.Metric(
            namespace="ECS/ContainerInsights",
            metric_name="RunningTaskCount",
            dimensions_map={
                "ClusterName": self.config.prefix,
                "ServiceName": self.spec.name,
            },
            statistic="Average",
            period=Duration.minutes(1),
        )

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
        running = self._running_tasks()
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
            self,
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

    # -- alarms -----------------------------------------------------------------------------

    def _alarm(self, id: str, **props: Any) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            id,
            alarm_name=f"{self.config.prefix}-{self.spec.name}-{id}",
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            **props,
        )
        alarm.add_alarm_action(cw_actions.SnsAction(self.platform.alarm_topic))
        self.alarms.append(alarm)
        return alarm

    def _below_desired_alarm(self) -> None:
        """Fewer tasks running than ECS wants, for longer than a deploy or a scale-out takes:
        tasks failing to start (image, settings, capacity) or being stopped over and over."""
        desired = cloudwatch.Metric(
            namespace="ECS/ContainerInsights",
            metric_name="DesiredTaskCount",
            dimensions_map={"ClusterName": self.config.prefix, "ServiceName": self.spec.name},
            statistic="Average",
            period=Duration.minutes(1),
        )
        self._alarm(
            "below-desired",
            alarm_description=(
                f"{self.spec.name} runs fewer tasks than desired for {BELOW_DESIRED_MINUTES} "
                "minutes"
            ),
            metric=cloudwatch.MathExpression(
                expression="FILL(desired, 0) - FILL(running, 0)",
                using_metrics={"desired": desired, "running": self._running_tasks()},
                label="tasks missing",
                period=Duration.minutes(1),
            ),
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=BELOW_DESIRED_MINUTES,
        )

    def _load_balancer_alarms(
        self, lb: LoadBalancer, target_groups: Sequence[elbv2.ApplicationTargetGroup]
    ) -> None:
        metrics = lb.alb.metrics
        period = Duration.minutes(1)
        if lb.external:
            self._alarm(
                "p99-latency",
                alarm_description=(
                    f"{self.spec.name}'s p99 response time above {P99_LATENCY_SECONDS} s "
                    "(the load balancer's TargetResponseTime)"
                ),
                metric=metrics.target_response_time(statistic="p99", period=period),
                threshold=P99_LATENCY_SECONDS,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=5,
                datapoints_to_alarm=3,
            )
        self._alarm(
            "5xx-rate",
            alarm_description=f"more than {FIVE_XX_PERCENT}% of {self.spec.name}'s answers are 5xx",
            metric=cloudwatch.MathExpression(
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
            threshold=FIVE_XX_PERCENT,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=5,
            datapoints_to_alarm=3,
        )
        self._alarm(
            "unhealthy-hosts",
            alarm_description=f"{self.spec.name} has targets failing the health check",
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
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=3,
            datapoints_to_alarm=3,
        )


def _path_chunks(paths: Sequence[str]) -> list[list[str]]:
    """``paths`` in groups one ALB rule condition takes (at most five values each)."""
    return [
        list(paths[index : index + _VALUES_PER_CONDITION])
        for index in range(0, len(paths), _VALUES_PER_CONDITION)
    ]
