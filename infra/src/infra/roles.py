"""The roles a service's tasks run with: least privilege, assumable for this account only."""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.checks import acknowledge_nag, acknowledge_wildcard
from infra.config import EnvConfig
from infra.platform import PlatformStack
from infra.service_config import ServiceProps
from servicekit.spec import QueueTrigger

__all__ = ["TaskRole", "service_role"]


def service_role(
    scope: Construct, id: str, *, config: EnvConfig, service: str, purpose: str
) -> iam.Role:
    """A role ``service`` assumes on behalf of this account only (no confused deputy)."""
    return iam.Role(
        scope,
        id,
        assumed_by=iam.ServicePrincipal(
            f"{service}.amazonaws.com",
            conditions={"StringEquals": {"aws:SourceAccount": config.account}},
        ),
        description=f"{config.prefix}: {purpose}",
    )


class TaskRole:
    """What a service's code may call (``role``): its own parameters, its secrets, its queues,
    its task protection (a queue consumer), traces, and ECS Exec sessions when enabled."""

    def __init__(
        self,
        scope: Construct,
        props: ServiceProps,
    ) -> None:
        config, platform, spec = props.config, props.platform, props.spec
        stack = Stack.of(scope)
        role = service_role(
            scope,
            "TaskRole",
            config=config,
            service="ecs-tasks",
            purpose=f"what {spec.name}'s code may call",
        )
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
                            stack.format_arn(
                                service="ssm", resource="parameter", resource_name=path[1:]
                            ),
                            stack.format_arn(
                                service="ssm", resource="parameter", resource_name=f"{path[1:]}/*"
                            ),
                        )
                    ],
                )
            )
        secrets = [
            platform.secret(spec.name, name).secret_arn for name in spec.config.secrets.values()
        ]
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
            tasks_arn = stack.format_arn(
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
                stack.format_arn(
                    service="ssm", resource="parameter", resource_name=f"{path[1:]}/*"
                ),
                "the service's own Parameter Store prefix: settings and flags under it",
            )
        if config.ecs_exec:
            _exec_sessions(role, stack, platform)
        self.role = role


def _exec_sessions(role: iam.Role, stack: Stack, platform: PlatformStack) -> None:
    """What the SSM agent in a task needs for an ECS Exec session (the cluster's settings).

    The channel actions (``ssmmessages:*Channel``, no resource-level permissions) are added
    by ECS for a service with execute-command; these are the cluster's session key and log
    group, which an imported cluster does not tell it.
    """
    # By name: a literal ARN, no reference to the platform's output.
    exec_logs = stack.format_arn(
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
