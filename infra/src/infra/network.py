"""The network stack: the VPC, its flow logs, the VPC endpoints (no NAT) and the data key.

Its own stack because it changes least and everything else sits in it: deploying the platform
or a service never touches it. The environment's KMS key lives here too: whatever is encrypted
with it (logs, secrets, the alarm topic, database storage) must never outlive it.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.checks import skip_checkov
from infra.config import EnvConfig

__all__ = ["HTTPS_PORT", "VPC_CIDR", "NetworkStack"]

VPC_CIDR = "10.0.0.0/16"
# What tasks, instances and functions reach AWS APIs on, and an internet-facing ALB listens on.
HTTPS_PORT = 443

# What tasks, EC2 container instances and the rotation function call when no NAT gateway
# gives them the internet: image pulls, logs, secrets, parameters, the queue, traces, KMS,
# the ECS agent (EC2 capacity) and STS for the SDKs' regional endpoints.
_INTERFACE_ENDPOINTS = {
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "Monitoring": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "Ssm": ec2.InterfaceVpcEndpointAwsService.SSM,
    "SsmMessages": ec2.InterfaceVpcEndpointAwsService.SSM_MESSAGES,  # ECS Exec sessions
    "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "XRay": ec2.InterfaceVpcEndpointAwsService.XRAY,
    "Kms": ec2.InterfaceVpcEndpointAwsService.KMS,
    "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
    "Ecs": ec2.InterfaceVpcEndpointAwsService.ECS,
    "EcsAgent": ec2.InterfaceVpcEndpointAwsService.ECS_AGENT,
    "EcsTelemetry": ec2.InterfaceVpcEndpointAwsService.ECS_TELEMETRY,
}


class NetworkStack(Stack):
    """VPC over ``max_azs`` AZs: public subnets for the ALBs (and NAT), private for the rest."""

    def __init__(self, scope: Construct, id: str, *, config: EnvConfig, **kwargs: Any) -> None:
        super().__init__(scope, id, **kwargs)
        private_type = (
            ec2.SubnetType.PRIVATE_ISOLATED
            if config.endpoints_only
            else ec2.SubnetType.PRIVATE_WITH_EGRESS
        )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(VPC_CIDR),
            max_azs=config.max_azs,
            nat_gateways=config.nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=22
                ),
                ec2.SubnetConfiguration(name="private", subnet_type=private_type, cidr_mask=20),
            ],
            restrict_default_security_group=True,
            # S3 through a gateway endpoint is free and keeps image layers (ECR stores them in
            # S3) off the NAT gateway's per-GB charge.
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)
            },
        )
        self.key = kms.Key(
            self,
            "Key",
            alias=f"alias/{config.prefix}",
            description=f"{config.prefix}: logs, secrets, parameters, alarm topic, database",
            enable_key_rotation=True,
            pending_window=Duration.days(30),
            removal_policy=RemovalPolicy.RETAIN,
        )
        # CloudWatch Logs encrypts log groups of this account and region only.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal(f"logs.{config.region}.amazonaws.com")],
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": (
                            f"arn:{self.partition}:logs:{config.region}:{config.account}:log-group:*"
                        )
                    }
                },
            )
        )
        # Alarms (CloudWatch) and events (EventBridge rules) publish to the encrypted alarm topic.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[
                    iam.ServicePrincipal("cloudwatch.amazonaws.com"),
                    iam.ServicePrincipal("events.amazonaws.com"),
                ],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": config.account}},
            )
        )
        flow_logs = logs.LogGroup(
            self,
            "FlowLogs",
            retention=logs.RetentionDays.ONE_YEAR,
            encryption_key=self.key,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
        self.private_subnets = ec2.SubnetSelection(subnet_type=private_type)
        # CDK's deploy-time function that empties the default security group's rules.
        provider = self.node.find_child("Custom::VpcRestrictDefaultSGCustomResourceProvider")
        for check, reason in (
            ("CKV_AWS_115", "runs once per deployment, from CloudFormation only"),
            ("CKV_AWS_116", "CloudFormation retries and reports its failures itself"),
            ("CKV_AWS_117", "calls the EC2 API only; it needs nothing inside the VPC"),
        ):
            skip_checkov(provider.node.find_child("Handler"), check, reason)
        if config.endpoints_only:
            endpoint_sg = ec2.SecurityGroup(
                self,
                "EndpointSg",
                vpc=self.vpc,
                description=f"{config.prefix}: interface endpoints, HTTPS from inside the VPC",
                allow_all_outbound=False,
            )
            endpoint_sg.add_ingress_rule(
                ec2.Peer.ipv4(VPC_CIDR), ec2.Port.tcp(HTTPS_PORT), "HTTPS from the VPC"
            )
            for name, service in _INTERFACE_ENDPOINTS.items():
                self.vpc.add_interface_endpoint(
                    name,
                    service=service,
                    subnets=self.private_subnets,
                    private_dns_enabled=True,
                    security_groups=[endpoint_sg],
                    open=False,
                )
