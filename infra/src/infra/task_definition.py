"""A service's task definition: its app container and the collector sidecar, the execution role
that pulls both images, and the task volumes a read-only root filesystem needs."""

from __future__ import annotations

from aws_cdk import Annotations, Duration, Size, Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.checks import acknowledge_nag, acknowledge_wildcard
from infra.config import EnvConfig
from infra.registry import ECR_PUBLIC_PREFIX
from infra.roles import service_role
from infra.service_config import OTLP_HTTP_PORT, ServiceProps, app_environment
from suite_contract.ecr import repository_name
from suite_contract.spec import ServiceSpec

__all__ = ["APP_CONTAINER", "ServiceTaskDefinition"]

APP_CONTAINER = "app"
COLLECTOR_CONTAINER = "otel-collector"
# Where the Dockerfile puts image/healthcheck.
HEALTHCHECK = "/usr/local/bin/healthcheck"
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
# ECS Exec's SSM agent writes under these (aws/containers-roadmap#1359): task volumes, since the
# root filesystem is read-only. Volume name: mount path.
EXEC_AGENT_PATHS = {
    "ssm-managed-agents": "/managed-agents",
    "ssm-lib": "/var/lib/amazon/ssm",
    "ssm-log": "/var/log/amazon/ssm",
}


class ServiceTaskDefinition:
    """``task_definition`` (awsvpc, Fargate or EC2 as the spec's capacity needs) and its
    ``execution_role``."""

    def __init__(
        self,
        scope: Construct,
        props: ServiceProps,
        *,
        task_role: iam.IRole,
        log_group: logs.ILogGroup,
    ) -> None:
        self.scope = scope
        config, spec = props.config, props.spec
        self.execution_role = execution_role = service_role(
            scope,
            "ExecutionRole",
            config=config,
            service="ecs-tasks",
            purpose=f"pulls {spec.name}'s images, writes its logs",
        )
        self.task_definition = ecs.TaskDefinition(
            scope,
            "TaskDefinition",
            family=f"{config.prefix}-{spec.name}",
            compatibility=(
                ecs.Compatibility.FARGATE if spec.fargate else ecs.Compatibility.EC2_AND_FARGATE
            ),
            cpu=str(spec.task.cpu),
            memory_mib=str(spec.task.memory),
            network_mode=ecs.NetworkMode.AWS_VPC,
            task_role=task_role,
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
            scope, "Repository", repository_name(config.app, spec.name)
        )
        if config.image_digests and spec.name not in config.image_digests:
            Annotations.of(scope).add_warning_v2(
                "infra:imageTagFallback",
                f"imageDigests pins no image for {spec.name}: it runs the imageTag "
                f"{config.image_tag!r}, whatever it ran before",
            )
        logging = ecs.LogDrivers.aws_logs(
            stream_prefix=spec.name,
            log_group=log_group,
            # A slow log delivery must not block the process writing a line.
            mode=ecs.AwsLogDriverMode.NON_BLOCKING,
            max_buffer_size=Size.mebibytes(25),
        )
        collector = self._collector(config, spec, logging)
        app = self._app(props, repository, logging)
        acknowledge_nag(
            self.task_definition,
            "AwsSolutions-ECS2",
            "only non-secret configuration is in the environment: secrets are passed by id "
            "(DB_SECRET) and fetched at runtime, so rotation needs no redeploy",
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
        self._grant_pulls(repository)

    def _collector(
        self, config: EnvConfig, spec: ServiceSpec, logging: ecs.LogDriver
    ) -> ecs.ContainerDefinition:
        """The ADOT collector: the app's traces, batched, to X-Ray."""
        collector = self.task_definition.add_container(
            COLLECTOR_CONTAINER,
            image=ecs.ContainerImage.from_registry(
                f"{config.account}.dkr.ecr.{config.region}.amazonaws.com/"
                f"{ECR_PUBLIC_PREFIX}/{config.otel_collector_image}"
            ),
            essential=False,  # losing traces must not stop the service
            memory_reservation_mib=64,
            readonly_root_filesystem=True,
            linux_parameters=_no_capabilities(self.scope, "CollectorLinux"),
            user=spec.task.user,
            environment={"AOT_CONFIG_CONTENT": COLLECTOR_CONFIG},
            logging=logging,
        )
        Annotations.of(collector).acknowledge_warning(
            "@aws-cdk/aws-ecs:ecrImageRequiresPolicy",
            "the execution role's PullThroughCache statement grants the pull",
        )
        return collector

    def _app(
        self,
        props: ServiceProps,
        repository: ecr.IRepository,
        logging: ecs.LogDriver,
    ) -> ecs.ContainerDefinition:
        """The service's own container, from its image in the registry."""
        config, spec = props.config, props.spec
        return self.task_definition.add_container(
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
            linux_parameters=_no_capabilities(self.scope, "AppLinux", init_process=True),
            stop_timeout=Duration.seconds(spec.task.stop_timeout),
            environment=app_environment(self.scope, props),
            logging=logging,
            port_mappings=(
                [ecs.PortMapping(container_port=spec.port, name=spec.name)] if spec.port else None
            ),
            health_check=(
                ecs.HealthCheck(
                    # The image's own check (image/healthcheck), on the spec's port and path.
                    command=["CMD", HEALTHCHECK, str(spec.port), spec.health_path],
                    interval=Duration.seconds(15),
                    timeout=Duration.seconds(5),
                    retries=3,
                    start_period=Duration.seconds(30),
                )
                if spec.port and spec.health_path
                else None
            ),
        )

    def _grant_pulls(self, repository: ecr.IRepository) -> None:
        """The execution role pulls the app's image and the collector's (through the cache)."""
        execution_role = self.execution_role
        repository.grant_pull(execution_role)
        cache_arn = Stack.of(self.scope).format_arn(
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


def _no_capabilities(
    scope: Construct, id: str, *, init_process: bool = False
) -> ecs.LinuxParameters:
    """Every Linux capability dropped: a non-root process on a high port needs none."""
    parameters = ecs.LinuxParameters(scope, id, init_process_enabled=init_process or None)
    parameters.drop_capabilities(ecs.Capability.ALL)
    return parameters
