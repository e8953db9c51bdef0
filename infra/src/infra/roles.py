"""The roles a service's tasks run with: least privilege, assumable for this account only."""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.checks import acknowledge_nag, acknowledge_wildcard
from infra.config import EnvConfig
from infra.platform import PlatformStack
from infra.service_config import ServiceProps
from suite_contract.spec import QueueTrigger

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

    def __init__(self, scope: Construct, props: ServiceProps) -> None:
        config, platform, spec = props.config, props.platform, props.spec
        self.stack = Stack.of(scope)
        self.role = service_role(
            scope,
            "TaskRole",
            config=config,
            service="ecs-tasks",
            purpose=f"what {spec.name}'s code may call",
        )
        prefixes = self._configuration(props)
        self._queues(props)
        self._traces()
        for prefix in prefixes:
            acknowledge_wildcard(
                self.role,
                prefix,
                "the service's own Parameter Store prefix: settings and flags under it",
            )
        if config.ecs_exec:
            _exec_sessions(self.role, self.stack, platform)

    def _configuration(self, props: ServiceProps) -> list[str]:
        """The parameters under the spec's prefixes and the secrets it names, and the key
        they are encrypted with (through those two services only); returns the prefixes'
        wildcard ARNs."""
        config, platform, spec = props.config, props.platform, props.spec
        role, stack = self.role, self.stack
        paths = [config.parameter_path(prefix)[1:] for prefix in spec.config.parameters]
        if paths:
            role.add_to_policy(
                iam.PolicyStatement(
                    sid="OwnParameters",
                    actions=["ssm:GetParametersByPath", "ssm:GetParameter", "ssm:GetParameters"],
                    resources=[
                        stack.format_arn(service="ssm", resource="parameter", resource_name=name)
                        for path in paths
                        for name in (path, f"{path}/*")
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
        return [
            stack.format_arn(service="ssm", resource="parameter", resource_name=f"{path}/*")
            for path in paths
        ]

    def _queues(self, props: ServiceProps) -> None:
        """Send to the queues it names, read the dead letters it names, consume its trigger's
        queue and protect a busy task from scale-in (through the ECS agent)."""
        config, platform, spec = props.config, props.platform, props.spec
        role = self.role
        for queue in spec.config.queues.values():
            platform.queues[queue].grant_send_messages(role)
        for queue in spec.config.dead_letters:
            platform.dead_letter_queues[queue].grant_consume_messages(role)
        if isinstance(spec.trigger, QueueTrigger):
            platform.queues[spec.trigger.queue].grant_consume_messages(role)
            tasks_arn = self.stack.format_arn(
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

    def _traces(self) -> None:
        self.role.add_to_policy(
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
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray's trace and sampling actions support no resource-level permissions",
        )


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
