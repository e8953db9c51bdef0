"""EC2 capacity for the cluster: on-demand and Spot Auto Scaling groups that ECS scales and
drains (from zero), next to Fargate's providers."""

from __future__ import annotations

from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.checks import acknowledge_nag, skip_checkov
from infra.config import EnvConfig
from infra.network import HTTPS_PORT, NetworkStack
from suite_contract.spec import CapacityProvider

__all__ = ["Ec2Capacity", "capacity_provider_name"]

_EC2_SUFFIX = {CapacityProvider.EC2: "ec2", CapacityProvider.EC2_SPOT: "ec2-spot"}


def capacity_provider_name(prefix: str, provider: CapacityProvider) -> str:
    """The name a capacity provider strategy uses for ``provider`` (a literal, not a ref)."""
    return provider.value if provider.fargate else f"{prefix}-{_EC2_SUFFIX[provider]}"


class Ec2Capacity:
    """One launch template, an on-demand and a Spot group, a capacity provider for each.

    ``providers`` holds the capacity providers, added to ``cluster``.
    """

    def __init__(
        self,
        scope: Construct,
        *,
        config: EnvConfig,
        network: NetworkStack,
        cluster: ecs.Cluster,
        alarm_topic: sns.ITopic,
    ) -> None:
        vpc, subnets = network.vpc, network.private_subnets
        instance_sg = ec2.SecurityGroup(
            scope,
            "InstanceSg",
            vpc=vpc,
            description=f"{config.prefix}: EC2 container instances (tasks have their own ENIs)",
            allow_all_outbound=False,
        )
        instance_sg.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(HTTPS_PORT), "ECS agent, ECR, CloudWatch over HTTPS"
        )
        role = iam.Role(
            scope,
            "InstanceRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="ECS container instances: the agent registers them with the cluster",
        )
        user_data = ec2.UserData.for_linux()
        # awsvpc tasks must not borrow the instance's role through the metadata service.
        user_data.add_commands(
            "echo ECS_AWSVPC_BLOCK_IMDS=true >> /etc/ecs/ecs.config",
            # A Spot interruption notice sets the instance DRAINING, so its tasks are replaced
            # within the two minutes' warning. CDK writes this only for an ASG with spotPrice,
            # never for a mixed-instances group; on on-demand instances no notice ever comes.
            "echo ECS_ENABLE_SPOT_INSTANCE_DRAINING=true >> /etc/ecs/ecs.config",
        )
        template = ec2.LaunchTemplate(
            scope,
            "InstanceTemplate",
            instance_type=ec2.InstanceType(config.ec2_instance_types[0]),
            machine_image=ecs.EcsOptimizedImage.amazon_linux2023(),
            user_data=user_data,
            role=role,
            security_group=instance_sg,
            require_imdsv2=True,
            detailed_monitoring=True,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        30, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3
                    ),
                )
            ],
        )
        notifications = [autoscaling.NotificationConfiguration(topic=alarm_topic)]
        on_demand = autoscaling.AutoScalingGroup(
            scope,
            "OnDemandAsg",
            vpc=vpc,
            vpc_subnets=subnets,
            launch_template=template,
            min_capacity=0,
            max_capacity=config.ec2_max_instances,
            notifications=notifications,
        )
        spot = autoscaling.AutoScalingGroup(
            scope,
            "SpotAsg",
            vpc=vpc,
            vpc_subnets=subnets,
            mixed_instances_policy=autoscaling.MixedInstancesPolicy(
                launch_template=template,
                instances_distribution=autoscaling.InstancesDistribution(
                    on_demand_base_capacity=0,
                    on_demand_percentage_above_base_capacity=0,
                    spot_allocation_strategy=autoscaling.SpotAllocationStrategy.PRICE_CAPACITY_OPTIMIZED,
                ),
                # Several types: Spot capacity is found in more pools.
                launch_template_overrides=[
                    autoscaling.LaunchTemplateOverrides(instance_type=ec2.InstanceType(name))
                    for name in config.ec2_instance_types
                ],
            ),
            capacity_rebalance=True,
            min_capacity=0,
            max_capacity=config.ec2_max_instances,
            notifications=notifications,
        )
        providers: dict[CapacityProvider, ecs.AsgCapacityProvider] = {}
        for provider, group in (
            (CapacityProvider.EC2, on_demand),
            (CapacityProvider.EC2_SPOT, spot),
        ):
            capacity = ecs.AsgCapacityProvider(
                scope,
                f"{provider.value.title().replace('_', '')}Capacity",
                capacity_provider_name=capacity_provider_name(config.prefix, provider),
                auto_scaling_group=group,
                enable_managed_scaling=True,
                enable_managed_termination_protection=True,
                enable_managed_draining=True,
                target_capacity_percent=100,
            )
            cluster.add_asg_capacity_provider(
                capacity, spot_instance_draining=provider is CapacityProvider.EC2_SPOT
            )
            providers[provider] = capacity
        skip_checkov(
            role.node.find_child("DefaultPolicy"),
            "CKV_AWS_111",
            "the ECS agent's registration actions, as CDK grants them, take no resource ARN",
        )
        acknowledge_nag(
            role,
            "AwsSolutions-IAM5[Action::ecs:Submit*]",
            "CDK's ECS agent policy: the Submit* state-change actions the agent reports with",
        )
        acknowledge_nag(
            spot,
            "AwsSolutions-EC26",
            "the check cannot read a mixed-instances launch template; it is the on-demand "
            "group's template, whose volumes are encrypted (and pass this check there)",
        )
        acknowledge_nag(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "the ECS agent's registration actions (ecs:RegisterContainerInstance, "
            "ecs:DiscoverPollEndpoint, ecs:Submit*) take no resource ARN",
        )
        self.providers = providers
