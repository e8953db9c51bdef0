"""A service's ECS service: its tasks' count, network, capacity and deployment settings, on
Fargate or on the cluster's EC2 capacity."""

from __future__ import annotations

from typing import TypedDict

from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from constructs import Construct

from infra.capacity import capacity_provider_name
from infra.deployment import DeploymentSettings
from infra.service_config import ServiceProps
from suite_contract.spec import Exposure, ServiceSpec

__all__ = ["EcsService", "capacity_strategies"]


def capacity_strategies(prefix: str, spec: ServiceSpec) -> list[ecs.CapacityProviderStrategy]:
    """The spec's ``[[capacity]]`` as capacity provider strategies (base, weight)."""
    return [
        ecs.CapacityProviderStrategy(
            capacity_provider=capacity_provider_name(prefix, item.provider),
            base=item.base or None,
            weight=item.weight,
        )
        for item in spec.capacity
    ]


class _ServiceOptions(TypedDict):
    """What a Fargate and an EC2 service are both given (None: CDK's default)."""

    cluster: ecs.ICluster
    task_definition: ecs.TaskDefinition
    service_name: str
    desired_count: int
    security_groups: list[ec2.ISecurityGroup]
    vpc_subnets: ec2.SubnetSelection
    capacity_provider_strategies: list[ecs.CapacityProviderStrategy]
    min_healthy_percent: int
    max_healthy_percent: int
    enable_execute_command: bool
    propagate_tags: ecs.PropagatedTagSource
    deployment_controller: ecs.DeploymentController | None
    circuit_breaker: ecs.DeploymentCircuitBreaker | None
    cloud_map_options: ecs.CloudMapOptions | None
    deployment_strategy: ecs.DeploymentStrategy | None
    bake_time: Duration | None
    health_check_grace_period: Duration | None


class EcsService:
    """``service``: a Fargate service when the spec runs on Fargate only, else an EC2 service
    spread over the AZs and packed by memory on the instances."""

    def __init__(
        self,
        scope: Construct,
        props: ServiceProps,
        *,
        cluster: ecs.ICluster,
        task_definition: ecs.TaskDefinition,
        security_group: ec2.ISecurityGroup,
        deployment: DeploymentSettings,
    ) -> None:
        config, platform, spec = props.config, props.platform, props.spec
        exposed = spec.exposure is not Exposure.NONE
        options = _ServiceOptions(
            cluster=cluster,
            task_definition=task_definition,
            service_name=spec.name,
            desired_count=spec.task.desired_count,
            security_groups=[security_group],
            vpc_subnets=platform.private_subnets,
            capacity_provider_strategies=capacity_strategies(config.prefix, spec),
            min_healthy_percent=spec.deployment.min_healthy_percent,
            max_healthy_percent=spec.deployment.max_percent,
            # ECS adds the ssmmessages channel statements to the task role; the task role's
            # ExecSessions statement covers the cluster's key and log group.
            enable_execute_command=config.ecs_exec,
            propagate_tags=ecs.PropagatedTagSource.SERVICE,
            deployment_controller=deployment.controller,
            circuit_breaker=deployment.circuit_breaker,
            cloud_map_options=deployment.cloud_map,
            deployment_strategy=deployment.strategy,
            bake_time=deployment.bake_time,
            health_check_grace_period=Duration.seconds(60) if exposed else None,
        )
        self.service: ecs.BaseService
        if spec.fargate:
            self.service = ecs.FargateService(
                scope, "Service", platform_version=ecs.FargatePlatformVersion.LATEST, **options
            )
        else:
            self.service = ecs.Ec2Service(
                scope,
                "Service",
                placement_strategies=[
                    ecs.PlacementStrategy.spread_across(ecs.BuiltInAttributes.AVAILABILITY_ZONE),
                    ecs.PlacementStrategy.packed_by_memory(),
                ],
                **options,
            )
