"""The platform stack: what an environment's services share and what outlives any one of them.

The cluster and its capacity providers, the Cloud Map namespace, one load balancer per service
(so a service's address survives redeploying or replacing its stack), the queues (they hold work
in flight), the database with its rotating secrets, the WAF web ACL, the access-log bucket, the
alarm topic and the shared parameters. The images are not the environment's: their repositories
are in the registry stack.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_servicediscovery as servicediscovery
from aws_cdk import aws_shield as shield
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from infra.checks import SSE_SQS, acknowledge_nag, skip_checkov
from infra.config import EnvConfig
from infra.connections import check_budget
from infra.network import NetworkStack
from servicekit.spec import (
    AuthSpec,
    CapacityProvider,
    EdgeSpec,
    Exposure,
    QueueTrigger,
    ServiceSpec,
)

__all__ = ["Auth", "LoadBalancer", "PlatformStack", "greater_than_pattern"]

POSTGRES_PORT = 5432
HTTPS_PORT = 443
DB_APP_USER = "app"
DB_MASTER_USER = "postgres_admin"
ROTATION_DAYS = 30
_EC2_SUFFIX = {CapacityProvider.EC2: "ec2", CapacityProvider.EC2_SPOT: "ec2-spot"}
# Alarm when the connections in use pass this share of max_connections.
DB_CONNECTIONS_ALARM_PERCENT = 80
DB_CPU_ALARM_PERCENT = 80
DB_FREE_STORAGE_GIB = 2  # 10% of the initial allocation: where storage autoscaling acts
# AWS WAF inspects at most this much of a request body behind an ALB (a fixed limit there).
WAF_BODY_INSPECTION_BYTES = 8 * 1024


@dataclass(frozen=True)
class LoadBalancer:
    """A service's load balancer; its stack adds the listener (blue/green swaps its target)."""

    alb: elbv2.ApplicationLoadBalancer
    security_group: ec2.SecurityGroup
    external: bool
    port: int
    """The listener's: 443 when external, else the service's own port."""


@dataclass(frozen=True)
class Auth:
    """A service's OAuth 2.0 resource server in the environment's user pool, and its clients."""

    issuer: str
    """``https://cognito-idp.{region}.amazonaws.com/{poolId}``: the tokens' ``iss``."""
    scope_prefix: str
    """``{resourceServerIdentifier}/``: Cognito's prefix on the custom scopes."""
    clients: tuple[cognito.UserPoolClient, ...]

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/.well-known/jwks.json"

    @property
    def client_ids(self) -> list[str]:
        return [client.user_pool_client_id for client in self.clients]


class PlatformStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvConfig,
        network: NetworkStack,
        specs: Mapping[str, ServiceSpec],
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id, **kwargs)
        self.config = config
        self.vpc = network.vpc
        self.private_subnets = network.private_subnets
        self.key = network.key

        self.alarm_topic = sns.Topic(
            self,
            "Alarms",
            topic_name=f"{config.prefix}-alarms",
            master_key=self.key,
            enforce_ssl=True,
        )
        if config.alarm_email:
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))

        # One group per service: what admits a service's tasks (its load balancer, the services
        # that call it) and what they may reach (the database when they use it, the services
        # they call) is written per service, so no task is reachable by a service that has no
        # business with it.
        self.task_security_groups = {
            name: self._task_security_group(spec) for name, spec in specs.items()
        }

        self.namespace = servicediscovery.PrivateDnsNamespace(
            self,
            "Namespace",
            name=f"{config.env}.{config.app}.internal",
            vpc=self.vpc,
            description=f"{config.prefix} service discovery",
        )
        # ECS Exec sessions: their data encrypted with the environment key, and every session's
        # commands and output recorded in an encrypted log group.
        self.exec_logs_name = f"/{config.app}/{config.env}/exec"
        self.exec_logs = logs.LogGroup(
            self,
            "ExecLogs",
            log_group_name=self.exec_logs_name,
            retention=config.log_retention,
            encryption_key=self.key,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            cluster_name=config.prefix,
            vpc=self.vpc,
            container_insights_v2=ecs.ContainerInsights.ENHANCED,
            enable_fargate_capacity_providers=True,
            execute_command_configuration=ecs.ExecuteCommandConfiguration(
                kms_key=self.key,
                logging=ecs.ExecuteCommandLogging.OVERRIDE,
                log_configuration=ecs.ExecuteCommandLogConfiguration(
                    cloud_watch_log_group=self.exec_logs, cloud_watch_encryption_enabled=True
                ),
            ),
        )
        self.capacity_providers = self._ec2_capacity()

        self.queues, self.dead_letter_queues = self._queues(specs)
        self.connections, self.max_connections = check_budget(
            specs,
            instance_type=config.db_instance_type,
            max_connections=config.db_max_connections,
        )
        self._database(specs)

        ssm.StringParameter(
            self,
            "SharedLogLevel",
            parameter_name=f"{config.parameter_path('shared')}/log_level",
            string_value="INFO",
            description="log level of every service unless its own prefix sets one",
        )

        self.auth = self._auth(specs)
        exposed = {name: spec for name, spec in specs.items() if spec.exposure is not Exposure.NONE}
        self.access_logs = self._access_log_bucket() if exposed else None
        self.load_balancers = {name: self._load_balancer(spec) for name, spec in exposed.items()}
        self._service_network(specs)
        self._waf_alarms(exposed)
        self._image_findings()
        self._dashboard(specs)

    # -- capacity ---------------------------------------------------------------------------

    def capacity_provider_name(self, provider: CapacityProvider) -> str:
        """The name a capacity provider strategy uses for ``provider`` (a literal, not a ref)."""
        return (
            provider.value if provider.fargate else f"{self.config.prefix}-{_EC2_SUFFIX[provider]}"
        )

    def _ec2_capacity(self) -> dict[CapacityProvider, ecs.AsgCapacityProvider]:
        """On-demand and Spot Auto Scaling groups, scaled and drained by ECS (from zero)."""
        config = self.config
        instance_sg = ec2.SecurityGroup(
            self,
            "InstanceSg",
            vpc=self.vpc,
            description=f"{config.prefix}: EC2 container instances (tasks have their own ENIs)",
            allow_all_outbound=False,
        )
        instance_sg.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(HTTPS_PORT), "ECS agent, ECR, CloudWatch over HTTPS"
        )
        role = iam.Role(
            self,
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
            self,
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
        notifications = [autoscaling.NotificationConfiguration(topic=self.alarm_topic)]
        on_demand = autoscaling.AutoScalingGroup(
            self,
            "OnDemandAsg",
            vpc=self.vpc,
            vpc_subnets=self.private_subnets,
            launch_template=template,
            min_capacity=0,
            max_capacity=config.ec2_max_instances,
            notifications=notifications,
        )
        spot = autoscaling.AutoScalingGroup(
            self,
            "SpotAsg",
            vpc=self.vpc,
            vpc_subnets=self.private_subnets,
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
        providers = {}
        for provider, group in (
            (CapacityProvider.EC2, on_demand),
            (CapacityProvider.EC2_SPOT, spot),
        ):
            capacity = ecs.AsgCapacityProvider(
                self,
                f"{provider.value.title().replace('_', '')}Capacity",
                capacity_provider_name=self.capacity_provider_name(provider),
                auto_scaling_group=group,
                enable_managed_scaling=True,
                enable_managed_termination_protection=True,
                enable_managed_draining=True,
                target_capacity_percent=100,
            )
            self.cluster.add_asg_capacity_provider(
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
        return providers

    # -- queues -----------------------------------------------------------------------------

    def _queues(
        self, specs: Mapping[str, ServiceSpec]
    ) -> tuple[dict[str, sqs.Queue], dict[str, sqs.Queue]]:
        triggers: dict[str, QueueTrigger] = {}
        for spec in specs.values():
            trigger = spec.trigger
            if isinstance(trigger, QueueTrigger):
                known = triggers.setdefault(trigger.queue, trigger)
                if known != trigger:
                    raise ValueError(
                        f"{spec.name}: queue {trigger.queue!r} is declared differently by two "
                        "services"
                    )
        for spec in specs.values():
            for queue in spec.config.queues.values():
                if queue not in triggers:
                    raise ValueError(
                        f"{spec.name}: sends to queue {queue!r} that no service consumes "
                        f"(consumed: {sorted(triggers) or 'none'})"
                    )
        queues: dict[str, sqs.Queue] = {}
        dead: dict[str, sqs.Queue] = {}
        for name, trigger in triggers.items():
            dlq = sqs.Queue(
                self,
                f"Queue{_pascal(name)}Dlq",
                queue_name=f"{self.config.prefix}-{name}-dlq",
                retention_period=Duration.days(14),
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
            )
            acknowledge_nag(dlq, "AwsSolutions-SQS3", "this queue is the dead-letter queue")
            queues[name] = sqs.Queue(
                self,
                f"Queue{_pascal(name)}",
                queue_name=f"{self.config.prefix}-{name}",
                visibility_timeout=Duration.seconds(trigger.visibility_timeout),
                retention_period=Duration.days(4),
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
                dead_letter_queue=sqs.DeadLetterQueue(
                    queue=dlq, max_receive_count=trigger.max_receive_count
                ),
            )
            dead[name] = dlq
            for encrypted in (queues[name], dlq):
                skip_checkov(encrypted, "CKV_AWS_27", SSE_SQS)
            self._queue_alarms(name, queues[name], dlq, trigger)
        return queues, dead

    def _queue_alarms(
        self, name: str, queue: sqs.Queue, dlq: sqs.Queue, trigger: QueueTrigger
    ) -> None:
        five_minutes = Duration.minutes(5)
        # A message older than ten visibility timeouts has been retried or ignored for long.
        oldest = max(600, 10 * trigger.visibility_timeout)
        for id, metric, threshold, what in (
            (
                "dlq-not-empty",
                dlq.metric_approximate_number_of_messages_visible(
                    period=five_minutes, statistic="Maximum"
                ),
                1,
                f"messages of {name} exhausted their retries (the jobs are dead)",
            ),
            (
                "oldest-message",
                queue.metric_approximate_age_of_oldest_message(
                    period=five_minutes, statistic="Maximum"
                ),
                oldest,
                f"{name}'s oldest message waits longer than {oldest} s: consumers are behind",
            ),
        ):
            alarm = cloudwatch.Alarm(
                self,
                f"Queue{_pascal(name)}{_pascal(id)}",
                alarm_name=f"{self.config.prefix}-{name}-{id}",
                alarm_description=what,
                metric=metric,
                threshold=threshold,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(cw_actions.SnsAction(self.alarm_topic))

    # -- database ---------------------------------------------------------------------------

    # -- the service network ------------------------------------------------------------------

    def _task_security_group(self, spec: ServiceSpec) -> ec2.SecurityGroup:
        group = ec2.SecurityGroup(
            self,
            f"Tasks{_pascal(spec.name)}Sg",
            vpc=self.vpc,
            description=f"{self.config.prefix}: tasks of {spec.name}",
            allow_all_outbound=False,
        )
        # AWS APIs, through the NAT gateway or the VPC endpoints.
        group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(HTTPS_PORT), "AWS APIs over HTTPS")
        return group

    def _service_network(self, specs: Mapping[str, ServiceSpec]) -> None:
        """Each service's tasks admit their own load balancer and the services that call them.

        A call goes to every task through Cloud Map (an ops view, a fan-out) or to any task
        through the internal load balancer: a caller is admitted by both, nobody else by either.
        """
        for name, spec in specs.items():
            lb = self.load_balancers.get(name)
            if lb is not None:
                assert spec.port is not None
                lb.security_group.connections.allow_to(
                    self.task_security_groups[name],
                    ec2.Port.tcp(spec.port),
                    f"{name}'s load balancer to its tasks",
                )
            for callee in spec.calls:
                target = specs.get(callee)
                if target is None or target.exposure is not Exposure.INTERNAL:
                    internal = [n for n, s in specs.items() if s.exposure is Exposure.INTERNAL]
                    raise ValueError(
                        f"{name}: calls {callee!r}, which is not an internal service ({internal})"
                    )
                if target.deployment.through_codedeploy:
                    raise ValueError(
                        f"{name}: calls {callee!r}, whose CodeDeploy blue/green has no Cloud Map"
                    )
                assert target.port is not None
                caller = self.task_security_groups[name]
                for group, what in (
                    (self.task_security_groups[callee], "tasks (Cloud Map)"),
                    (self.load_balancers[callee].security_group, "internal ALB"),
                ):
                    caller.connections.allow_to(
                        group, ec2.Port.tcp(target.port), f"{name} to {callee}'s {what}"
                    )

    def _database(self, specs: Mapping[str, ServiceSpec]) -> None:
        """PostgreSQL with two rotating secrets: the master, and the app's (alternating users).

        The services read ``{app}/{env}/db`` (the app user) by id and fetch it at runtime, so a
        rotation reaches them through servicekit's cache without a redeploy. Multi-user rotation
        alternates ``app`` and ``app_clone``: the previous password stays valid until the next
        rotation, so no connection opened just before a rotation fails.
        """
        config = self.config
        self.db_sg = ec2.SecurityGroup(
            self,
            "DbSg",
            vpc=self.vpc,
            description=f"{config.prefix}: PostgreSQL, from the services and the rotation",
            allow_all_outbound=False,
        )
        rotation_sg = ec2.SecurityGroup(
            self,
            "RotationSg",
            vpc=self.vpc,
            description=f"{config.prefix}: the secret rotation functions",
            allow_all_outbound=False,
        )
        rotation_sg.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(HTTPS_PORT), "Secrets Manager API"
        )
        clients = {
            name: group
            for name, group in self.task_security_groups.items()
            if specs[name].uses_database
        } | {"the rotation": rotation_sg}
        for what, client in clients.items():
            self.db_sg.add_ingress_rule(client, ec2.Port.tcp(POSTGRES_PORT), f"from {what}")
            client.add_egress_rule(self.db_sg, ec2.Port.tcp(POSTGRES_PORT), "to PostgreSQL")

        engine = rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_17_6)
        parameters = rds.ParameterGroup(
            self,
            "DbParameters",
            engine=engine,
            description=f"{config.prefix}: TLS only, slow statements logged",
            parameters={
                "rds.force_ssl": "1",
                "log_min_duration_statement": "1000",
                "log_connections": "1",
                "log_disconnections": "1",
            }
            # Unset, RDS's formula for the class applies (the budget assumes it).
            | (
                {"max_connections": str(config.db_max_connections)}
                if config.db_max_connections is not None
                else {}
            ),
        )
        identifier = f"{config.prefix}-db"
        # Created here, before the instance, so the exported logs get a retention and the key.
        log_groups = [
            logs.LogGroup(
                self,
                f"DbLogs{_pascal(kind)}",
                log_group_name=f"/aws/rds/instance/{identifier}/{kind}",
                retention=config.log_retention,
                encryption_key=self.key,
                removal_policy=RemovalPolicy.RETAIN,
            )
            for kind in ("postgresql", "upgrade")
        ]
        master = rds.DatabaseSecret(
            self,
            "DbMasterSecret",
            username=DB_MASTER_USER,
            secret_name=config.secret_name("db-master"),
            encryption_key=self.key,
        )
        self.database = rds.DatabaseInstance(
            self,
            "Db",
            instance_identifier=identifier,
            engine=engine,
            instance_type=ec2.InstanceType(config.db_instance_type),
            vpc=self.vpc,
            vpc_subnets=self.private_subnets,
            security_groups=[self.db_sg],
            credentials=rds.Credentials.from_secret(master),
            database_name=config.app.replace("-", "_"),
            parameter_group=parameters,
            multi_az=config.db_multi_az,
            storage_type=rds.StorageType.GP3,
            allocated_storage=20,
            max_allocated_storage=200,
            storage_encrypted=True,
            storage_encryption_key=self.key,
            backup_retention=Duration.days(7),
            copy_tags_to_snapshot=True,
            deletion_protection=True,
            removal_policy=RemovalPolicy.SNAPSHOT,
            iam_authentication=True,
            auto_minor_version_upgrade=True,
            cloudwatch_logs_exports=["postgresql", "upgrade"],
            monitoring_interval=Duration.seconds(60),
            enable_performance_insights=True,
            performance_insight_encryption_key=self.key,
            ca_certificate=rds.CaCertificate.RDS_CA_RSA2048_G1,
            publicly_accessible=False,
        )
        for group in log_groups:
            self.database.node.add_dependency(group)
        self._connections_alarm()
        self._database_alarms()
        master_secret = self.database.secret
        assert master_secret is not None  # from_secret credentials always attach one
        app_secret = rds.DatabaseSecret(
            self,
            "DbAppSecret",
            username=DB_APP_USER,
            dbname=config.app.replace("-", "_"),
            secret_name=config.secret_name("db"),
            master_secret=master_secret,
            encryption_key=self.key,
        )
        self.db_secret = app_secret.attach(self.database)
        rotation_options: dict[str, Any] = {
            "vpc": self.vpc,
            "vpc_subnets": self.private_subnets,
            "security_groups": [rotation_sg],
        }
        # rotate_immediately_on_update: CloudFormation would rotate as soon as the schedule
        # exists. The master's first rotation works then; the app's multi-user rotation clones
        # the `app` role, which the init/migration creates only after the stack is deployed, so
        # its first run would fail. It first runs after ROTATION_DAYS (or by hand once the role
        # exists: `aws secretsmanager rotate-secret`), and any failure reaches the alarm topic.
        for secret, hosted, name, at_once in (
            (
                master_secret,
                secretsmanager.HostedRotation.postgre_sql_single_user(
                    function_name=f"{config.prefix}-db-master-rotation", **rotation_options
                ),
                "MasterRotation",
                True,
            ),
            (
                self.db_secret,
                secretsmanager.HostedRotation.postgre_sql_multi_user(
                    master_secret=master_secret,
                    function_name=f"{config.prefix}-db-app-rotation",
                    **rotation_options,
                ),
                "AppRotation",
                False,
            ),
        ):
            schedule = secretsmanager.RotationSchedule(
                self,
                name,
                secret=secret,
                hosted_rotation=hosted,
                automatically_after=Duration.days(ROTATION_DAYS),
                rotate_immediately_on_update=at_once,
            )
            # The hosted function decrypts the secret with the environment's key.
            resource = schedule.node.default_child
            assert isinstance(resource, secretsmanager.CfnRotationSchedule)
            resource.add_property_override("HostedRotationLambda.KmsKeyArn", self.key.key_arn)

        self._rotation_failures([master_secret, self.db_secret])

        monitoring_role = self.database.node.find_child("MonitoringRole")
        acknowledge_nag(
            monitoring_role,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonRDSEnhancedMonitoringRole]",
            "AWS's policy for RDS enhanced monitoring, the one its documentation prescribes",
        )
        acknowledge_nag(
            self.database,
            "AwsSolutions-RDS11",
            "the default port: the security group, not the port number, keeps clients out",
        )
        if not config.db_multi_az:
            acknowledge_nag(
                self.database,
                "AwsSolutions-RDS3",
                "dbMultiAz=false was chosen for this environment (cost); production keeps it",
            )
            skip_checkov(self.database, "CKV_AWS_157", "dbMultiAz=false chosen for this env")

    def _rotation_failures(self, secrets: list[secretsmanager.ISecret]) -> None:
        """A failed rotation of the database's secrets reaches the alarm topic.

        Secrets Manager reports it as a CloudTrail service event (``RotationFailed``), not as a
        metric: an EventBridge rule on it, for these secrets only, publishes to the topic.
        """
        events.Rule(
            self,
            "DbRotationFailed",
            rule_name=f"{self.config.prefix}-db-rotation-failed",
            description="a rotation of the database's secrets failed",
            event_pattern=events.EventPattern(
                source=["aws.secretsmanager"],
                detail_type=["AWS Service Event via CloudTrail"],
                detail={
                    "eventName": ["RotationFailed"],
                    "additionalEventData": {"SecretId": [s.secret_arn for s in secrets]},
                },
            ),
            targets=[targets.SnsTopic(self.alarm_topic)],
        )

    def _alarm(self, id: str, name: str, **props: Any) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            id,
            alarm_name=f"{self.config.prefix}-{name}",
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            **props,
        )
        alarm.add_alarm_action(cw_actions.SnsAction(self.alarm_topic))
        return alarm

    def _database_alarms(self) -> None:
        """CPU and free storage (connections: :meth:`_connections_alarm`).

        No replica-lag alarm: a Multi-AZ DB *instance* replicates to its standby synchronously
        and publishes no ReplicaLag (only read replicas and Multi-AZ DB clusters do).
        """
        self._alarm(
            "DbCpu",
            "db-cpu",
            alarm_description=f"database CPU above {DB_CPU_ALARM_PERCENT}% for 15 minutes",
            metric=self.database.metric_cpu_utilization(period=Duration.minutes(5)),
            threshold=DB_CPU_ALARM_PERCENT,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=3,
        )
        self._alarm(
            "DbFreeStorage",
            "db-free-storage",
            alarm_description=(
                f"database free storage below {DB_FREE_STORAGE_GIB} GiB: storage autoscaling "
                "is not keeping up or has reached max_allocated_storage"
            ),
            metric=self.database.metric_free_storage_space(
                period=Duration.minutes(5), statistic="Minimum"
            ),
            threshold=DB_FREE_STORAGE_GIB * 1024**3,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=2,
        )

    def _waf_alarms(self, exposed: Mapping[str, ServiceSpec]) -> None:
        """A spike of blocked requests: more in one rate window than one client may send."""
        for name, spec in exposed.items():
            if spec.exposure is not Exposure.EXTERNAL:
                continue
            edge = spec.edge
            self._alarm(
                f"WafBlocked{_pascal(name)}",
                f"{name}-waf-blocked",
                alarm_description=(
                    f"WAF blocked more than {edge.requests_per_ip} requests to {name} in "
                    f"{edge.rate_window_seconds} s (the per-address limit of one window): an "
                    "attack, or a rule blocking real traffic"
                ),
                metric=self.waf_blocked(name, Duration.seconds(edge.rate_window_seconds)),
                threshold=edge.requests_per_ip,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
            )

    def waf_blocked(self, service: str, period: Duration) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace="AWS/WAFV2",
            metric_name="BlockedRequests",
            dimensions_map={
                "WebACL": f"{self.config.prefix}-{service}-web",
                "Region": self.config.region,
                "Rule": "ALL",
            },
            statistic="Sum",
            period=period,
        )

    def _image_findings(self) -> None:
        """A pushed image of this app with HIGH or CRITICAL findings reaches the alarm topic.

        ECR's scan result is an event, not a metric. The repositories are the account's (the
        registry stack): each environment is told, since each may be about to run the image.
        """
        severity = [{"numeric": [">", 0]}]
        events.Rule(
            self,
            "ImageScanFindings",
            rule_name=f"{self.config.prefix}-image-findings",
            description=f"an image in {self.config.app}/* has HIGH or CRITICAL findings",
            event_pattern=events.EventPattern(
                source=["aws.ecr"],
                detail_type=["ECR Image Scan"],
                detail={
                    "repository-name": [{"prefix": f"{self.config.app}/"}],
                    "scan-status": ["COMPLETE"],
                    "$or": [
                        {"finding-severity-counts": {"CRITICAL": severity}},
                        {"finding-severity-counts": {"HIGH": severity}},
                    ],
                },
            ),
            targets=[targets.SnsTopic(self.alarm_topic)],
        )

    def _dashboard(self, specs: Mapping[str, ServiceSpec]) -> None:
        """One picture of the environment: traffic, queues, tasks, capacity, the database."""
        prefix, minute = self.config.prefix, Duration.minutes(1)

        def graph(title: str, metrics: Sequence[cloudwatch.IMetric]) -> cloudwatch.GraphWidget:
            return cloudwatch.GraphWidget(title=title, left=list(metrics), width=8, height=6)

        widgets: list[cloudwatch.IWidget] = []
        for name, lb in self.load_balancers.items():
            metrics = lb.alb.metrics
            widgets += [
                graph(f"{name}: requests", [metrics.request_count(period=minute)]),
                graph(
                    f"{name}: errors",
                    [
                        metrics.http_code_target(elbv2.HttpCodeTarget.TARGET_5XX_COUNT),
                        metrics.http_code_elb(elbv2.HttpCodeElb.ELB_5XX_COUNT),
                        metrics.http_code_target(elbv2.HttpCodeTarget.TARGET_4XX_COUNT),
                    ]
                    + ([self.waf_blocked(name, minute)] if lb.external else []),
                ),
                graph(
                    f"{name}: latency",
                    [
                        metrics.target_response_time(statistic=stat, period=minute)
                        for stat in ("p50", "p99")
                    ],
                ),
            ]
        for name, queue in self.queues.items():
            dlq = self.dead_letter_queues[name]
            widgets += [
                graph(
                    f"queue {name}: depth",
                    [
                        queue.metric_approximate_number_of_messages_visible(period=minute),
                        queue.metric_approximate_number_of_messages_not_visible(period=minute),
                    ],
                ),
                graph(
                    f"queue {name}: oldest message (s)",
                    [queue.metric_approximate_age_of_oldest_message(period=minute)],
                ),
                graph(
                    f"queue {name}: dead letters",
                    [dlq.metric_approximate_number_of_messages_visible(period=minute)],
                ),
            ]
        widgets += [
            graph(
                "running tasks per service",
                [
                    cloudwatch.Metric(
                        namespace="ECS/ContainerInsights",
                        metric_name="RunningTaskCount",
                        dimensions_map={"ClusterName": prefix, "ServiceName": name},
                        statistic="Average",
                        period=minute,
                        label=name,
                    )
                    for name in specs
                ],
            ),
            graph(
                "EC2 capacity providers: reservation %",
                [
                    cloudwatch.Metric(
                        namespace="AWS/ECS/ManagedScaling",
                        metric_name="CapacityProviderReservation",
                        dimensions_map={
                            "ClusterName": prefix,
                            "CapacityProviderName": self.capacity_provider_name(provider),
                        },
                        statistic="Average",
                        period=minute,
                        label=provider.value,
                    )
                    for provider in self.capacity_providers
                ],
            ),
            graph(
                "database",
                [
                    self.database.metric_cpu_utilization(period=minute),
                    self.database.metric_database_connections(period=minute),
                ],
            ),
            graph(
                "database: free storage",
                [self.database.metric_free_storage_space(period=minute)],
            ),
        ]
        cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=prefix,
            widgets=[widgets[index : index + 3] for index in range(0, len(widgets), 3)],
        )

    def _connections_alarm(self) -> None:
        """Connections in use near max_connections: the next scale-out or deploy would fail."""
        threshold = self.max_connections * DB_CONNECTIONS_ALARM_PERCENT // 100
        alarm = cloudwatch.Alarm(
            self,
            "DbConnections",
            alarm_name=f"{self.config.prefix}-db-connections",
            alarm_description=(
                f"database connections above {DB_CONNECTIONS_ALARM_PERCENT}% of max_connections "
                f"({self.max_connections}); the budget's peak is {self.peak_connections}"
            ),
            metric=self.database.metric_database_connections(
                period=Duration.minutes(1), statistic="Maximum"
            ),
            threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=5,
            datapoints_to_alarm=3,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cw_actions.SnsAction(self.alarm_topic))

    @property
    def peak_connections(self) -> int:
        """The services' peak connections, the margin left out."""
        return sum(row.peak for row in self.connections)

    # -- identity -------------------------------------------------------------------------

    def _auth(self, specs: Mapping[str, ServiceSpec]) -> dict[str, Auth]:
        """The environment's Cognito user pool: a resource server per service with ``[auth]``.

        Machine callers only: each client gets tokens with the client-credentials grant from
        the pool's domain (``/oauth2/token``); nobody signs up or signs in.
        """
        served = {name: spec.auth for name, spec in specs.items() if spec.auth is not None}
        if not served:
            return {}
        config = self.config
        pool = cognito.UserPool(
            self,
            "UserPool",
            user_pool_name=config.prefix,
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(username=True),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            account_recovery=cognito.AccountRecovery.NONE,
            password_policy=cognito.PasswordPolicy(
                min_length=16,
                require_lowercase=True,
                require_uppercase=True,
                require_digits=True,
                require_symbols=True,
            ),
            deletion_protection=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge_nag(
            pool,
            "AwsSolutions-COG8",
            "no user signs in to this pool: its callers are machine clients (client "
            "credentials), which the Plus plan's threat protection does not evaluate",
        )
        # A prefix domain for the token endpoint; the account keeps it unique in the region.
        pool.add_domain(
            "Domain",
            cognito_domain=cognito.CognitoDomainOptions(
                domain_prefix=f"{config.prefix}-{config.account}"
            ),
        )
        # The tokens' iss (the pool's ProviderURL attribute lacks the scheme).
        issuer = f"https://cognito-idp.{config.region}.amazonaws.com/{pool.user_pool_id}"
        return {
            name: self._resource_server(pool, issuer, name, auth) for name, auth in served.items()
        }

    def _resource_server(
        self, pool: cognito.UserPool, issuer: str, service: str, auth: AuthSpec
    ) -> Auth:
        config = self.config
        identifier = f"https://{service}.{config.domain}"
        scopes = {
            name: cognito.ResourceServerScope(scope_name=name, scope_description=description)
            for name, description in auth.scopes.items()
        }
        server = pool.add_resource_server(
            f"{_pascal(service)}Api",
            identifier=identifier,
            user_pool_resource_server_name=f"{config.prefix}-{service}",
            scopes=list(scopes.values()),
        )
        clients = tuple(
            pool.add_client(
                f"{_pascal(service)}Client{_pascal(client)}",
                user_pool_client_name=f"{config.prefix}-{service}-{client}",
                generate_secret=True,
                o_auth=cognito.OAuthSettings(
                    flows=cognito.OAuthFlows(client_credentials=True),
                    scopes=[
                        cognito.OAuthScope.resource_server(server, scopes[scope])
                        for scope in granted
                    ],
                ),
                auth_flows=cognito.AuthFlow(),
                prevent_user_existence_errors=True,
                enable_token_revocation=True,
                access_token_validity=Duration.hours(1),
            )
            for client, granted in auth.clients.items()
        )
        return Auth(issuer=issuer, scope_prefix=f"{identifier}/", clients=clients)

    # -- edge -------------------------------------------------------------------------------

    def _access_log_bucket(self) -> s3.Bucket:
        bucket = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=Duration.days(90),
                    noncurrent_version_expiration=Duration.days(30),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
        )
        acknowledge_nag(
            bucket,
            "AwsSolutions-S1",
            "this bucket holds the access logs; logging its own access would loop",
        )
        for check, reason in (
            ("CKV_AWS_18", "this bucket holds the access logs; logging its own access would loop"),
            ("CKV_AWS_145", "ALB access logs can only be written to SSE-S3 buckets, not SSE-KMS"),
            ("CKV_AWS_144", "access logs are not replicated to another region: kept 90 days here"),
            ("CKV2_AWS_62", "nothing reacts to new log objects; they are read on demand"),
        ):
            skip_checkov(bucket, check, reason)
        return bucket

    def _web_acl(self, spec: ServiceSpec) -> wafv2.CfnWebACL:
        """The service's web ACL: its body limit, AWS managed rule groups, rate limits per
        client address and per caller (the spec's ``[edge]`` figures), logged to CloudWatch.

        One per external service, so each service's figures apply to its own traffic only.
        """
        edge = spec.edge
        name = _pascal(spec.name)
        rules = [_body_limit_rule(edge, priority=0)]
        managed = (
            "AWSManagedRulesCommonRuleSet",
            "AWSManagedRulesKnownBadInputsRuleSet",
            "AWSManagedRulesAmazonIpReputationList",
            "AWSManagedRulesSQLiRuleSet",
        )
        rules += [
            wafv2.CfnWebACL.RuleProperty(
                name=group,
                priority=priority,
                override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                        vendor_name="AWS",
                        name=group,
                        rule_action_overrides=_body_size_counted(edge)
                        if group == "AWSManagedRulesCommonRuleSet"
                        else None,
                    )
                ),
                visibility_config=_visibility(group),
            )
            for priority, group in enumerate(managed, start=len(rules))
        ]
        rules += [
            _rate_rule("RatePerIp", edge.requests_per_ip, edge, len(rules)),
            # Each token is its own key; requests without the header are not counted here (the
            # per-address rule sees them), so rotating garbage headers gains nothing.
            _rate_rule(
                "RatePerCaller",
                edge.requests_per_caller,
                edge,
                len(rules) + 1,
                custom_keys=[
                    wafv2.CfnWebACL.RateBasedStatementCustomKeyProperty(
                        header=wafv2.CfnWebACL.RateLimitHeaderProperty(
                            name="authorization",
                            text_transformations=[
                                wafv2.CfnWebACL.TextTransformationProperty(priority=0, type="NONE")
                            ],
                        )
                    )
                ],
            ),
        ]
        prefix = f"{self.config.prefix}-{spec.name}"
        acl = wafv2.CfnWebACL(
            self,
            f"WebAcl{name}",
            name=f"{prefix}-web",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            rules=rules,
            visibility_config=_visibility(f"{prefix}-web"),
            custom_response_bodies={
                "too-large": wafv2.CfnWebACL.CustomResponseBodyProperty(
                    content_type="APPLICATION_JSON",
                    content=json.dumps(
                        {
                            "detail": "request body too large",
                            "max_body_bytes": edge.max_body_bytes,
                        }
                    ),
                )
            },
        )
        waf_logs = logs.LogGroup(
            self,
            f"WafLogs{name}",
            # WAF delivers only to log groups named aws-waf-logs-*.
            log_group_name=f"aws-waf-logs-{prefix}",
            retention=self.config.log_retention,
            encryption_key=self.key,
            removal_policy=RemovalPolicy.RETAIN,
        )
        wafv2.CfnLoggingConfiguration(
            self,
            f"WebAclLogging{name}",
            resource_arn=acl.attr_arn,
            log_destination_configs=[
                Stack.of(self).format_arn(
                    service="logs",
                    resource="log-group",
                    resource_name=waf_logs.log_group_name,
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                )
            ],
        )
        return acl

    def _load_balancer(self, spec: ServiceSpec) -> LoadBalancer:
        external = spec.exposure is Exposure.EXTERNAL
        name = _pascal(spec.name)
        security_group = ec2.SecurityGroup(
            self,
            f"Alb{name}Sg",
            vpc=self.vpc,
            description=f"{self.config.prefix}: {spec.exposure.value} ALB of {spec.name}",
            allow_all_outbound=False,
        )
        if external:
            for port in (HTTPS_PORT, 80):
                security_group.add_ingress_rule(
                    ec2.Peer.any_ipv4(), ec2.Port.tcp(port), "the internet (80 redirects)"
                )
            skip_checkov(
                security_group, "CKV_AWS_260", "port 80 answers only with a redirect to HTTPS"
            )
            acknowledge_nag(
                security_group,
                "AwsSolutions-EC23",
                "an internet-facing ALB: 443 open to all by design, 80 only redirects; WAF filters",
            )
        alb = elbv2.ApplicationLoadBalancer(
            self,
            f"Alb{name}",
            load_balancer_name=f"{self.config.prefix}-{spec.name}"[:32],
            vpc=self.vpc,
            internet_facing=external,
            vpc_subnets=(
                ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC)
                if external
                else self.private_subnets
            ),
            security_group=security_group,
            drop_invalid_header_fields=True,
            deletion_protection=True,
            desync_mitigation_mode=elbv2.DesyncMitigationMode.DEFENSIVE,
            idle_timeout=Duration.seconds(spec.load_balancer.idle_timeout_seconds),
        )
        assert self.access_logs is not None
        alb.log_access_logs(self.access_logs, prefix=spec.name)
        if external:
            alb.add_redirect(source_port=80, target_port=HTTPS_PORT)
            if self.config.shield_advanced:
                # Needs the account's Shield Advanced subscription (a monthly fee and a
                # one-year commitment): DDoS response team, cost protection, L7 mitigation.
                shield.CfnProtection(
                    self,
                    f"Alb{name}Shield",
                    name=f"{self.config.prefix}-{spec.name}",
                    resource_arn=alb.load_balancer_arn,
                )
            wafv2.CfnWebACLAssociation(
                self,
                f"Alb{name}Waf",
                resource_arn=alb.load_balancer_arn,
                web_acl_arn=self._web_acl(spec).attr_arn,
            )
        else:
            skip_checkov(
                alb,
                "CKV2_AWS_28",
                "internal ALB: reachable only from its callers' security groups; WAF guards "
                "the internet-facing one",
            )
        assert spec.port is not None  # the spec requires a port when exposed
        return LoadBalancer(
            alb=alb,
            security_group=security_group,
            external=external,
            port=HTTPS_PORT if external else spec.port,
        )


def greater_than_pattern(limit: int) -> str:
    """A regular expression matching exactly the decimal integers above ``limit``.

    WAF compares no numbers, but it matches regular expressions: this one on Content-Length
    tells a declared body size above the limit without inspecting the body.
    """
    digits = str(limit)
    # Longer numbers (leading zeros aside) are all greater.
    branches = [rf"[1-9][0-9]{{{len(digits)},}}"]
    # Same length: equal up to position i, then a greater digit, then anything.
    for index, digit in enumerate(digits):
        if digit == "9":
            continue
        rest = len(digits) - index - 1
        tail = rf"[0-9]{{{rest}}}" if rest else ""
        branches.append(f"{digits[:index]}[{int(digit) + 1}-9]{tail}")
    return f"^0*(?:{'|'.join(branches)})$"


def _body_limit_rule(edge: EdgeSpec, *, priority: int) -> wafv2.CfnWebACL.RuleProperty:
    """413 when Content-Length declares more than ``max_body_bytes``.

    Behind an ALB, WAF reads only the first 8 KB of a body, so it cannot measure a larger
    one: the declared length is what it can judge. A body sent without Content-Length (chunked)
    passes here and the service counts it (MAX_BODY_BYTES, the same figure) while reading it.
    """
    return wafv2.CfnWebACL.RuleProperty(
        name="BodyTooLarge",
        priority=priority,
        action=wafv2.CfnWebACL.RuleActionProperty(
            block=wafv2.CfnWebACL.BlockActionProperty(
                custom_response=wafv2.CfnWebACL.CustomResponseProperty(
                    response_code=413, custom_response_body_key="too-large"
                )
            )
        ),
        statement=wafv2.CfnWebACL.StatementProperty(
            regex_match_statement=wafv2.CfnWebACL.RegexMatchStatementProperty(
                regex_string=greater_than_pattern(edge.max_body_bytes),
                field_to_match=wafv2.CfnWebACL.FieldToMatchProperty(
                    single_header={"Name": "content-length"}
                ),
                text_transformations=[
                    wafv2.CfnWebACL.TextTransformationProperty(priority=0, type="NONE")
                ],
            )
        ),
        visibility_config=_visibility("BodyTooLarge"),
    )


def _body_size_counted(edge: EdgeSpec) -> list[wafv2.CfnWebACL.RuleActionOverrideProperty]:
    """The common rule set blocks bodies over 8 KB (SizeRestrictions_BODY): counted instead
    when the service accepts more, since BodyTooLarge and the service hold the real limit."""
    if edge.max_body_bytes <= WAF_BODY_INSPECTION_BYTES:
        return []
    return [
        wafv2.CfnWebACL.RuleActionOverrideProperty(
            name="SizeRestrictions_BODY",
            action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={}),
        )
    ]


def _rate_rule(
    name: str,
    limit: int,
    edge: EdgeSpec,
    priority: int,
    custom_keys: list[wafv2.CfnWebACL.RateBasedStatementCustomKeyProperty] | None = None,
) -> wafv2.CfnWebACL.RuleProperty:
    return wafv2.CfnWebACL.RuleProperty(
        name=name,
        priority=priority,
        action=wafv2.CfnWebACL.RuleActionProperty(block={}),
        statement=wafv2.CfnWebACL.StatementProperty(
            rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                limit=limit,
                evaluation_window_sec=edge.rate_window_seconds,
                aggregate_key_type="CUSTOM_KEYS" if custom_keys else "IP",
                custom_keys=custom_keys,
            )
        ),
        visibility_config=_visibility(name),
    )


def _visibility(metric: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=True
    )


def _pascal(name: str) -> str:
    """``my-service`` -> ``MyService``: construct ids."""
    return "".join(part.title() for part in name.replace("_", "-").split("-"))
