"""The environment's PostgreSQL: instance, parameters, logs, two rotating secrets, alarms."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.alarms import AlarmTopic
from infra.checks import acknowledge_nag, skip_checkov
from infra.config import EnvConfig
from infra.names import pascal
from infra.network import HTTPS_PORT, NetworkStack

__all__ = ["DB_CONNECTIONS_ALARM_PERCENT", "Database"]

POSTGRES_PORT = 5432
DB_APP_USER = "app"
DB_MASTER_USER = "postgres_admin"
ROTATION_DAYS = 30
# Alarm when the connections in use pass this share of max_connections.
DB_CONNECTIONS_ALARM_PERCENT = 80
DB_CPU_ALARM_PERCENT = 80
DB_FREE_STORAGE_GIB = 2  # 10% of the initial allocation: where storage autoscaling acts


class Database:
    """PostgreSQL with two rotating secrets: the master, and the app's (alternating users).

    The services read ``{app}/{env}/db`` (the app user, ``app_secret``) by id and fetch it at
    runtime, so a rotation reaches them through servicekit's cache without a redeploy.
    Multi-user rotation alternates ``app`` and ``app_clone``: the previous password stays valid
    until the next rotation, so no connection opened just before a rotation fails.

    ``clients`` are the security groups admitted to it, by what they are (in that order).
    """

    def __init__(
        self,
        scope: Construct,
        *,
        config: EnvConfig,
        network: NetworkStack,
        clients: Mapping[str, ec2.SecurityGroup],
        max_connections: int,
        peak_connections: int,
        alarms: AlarmTopic,
        alarm_topic: sns.ITopic,
    ) -> None:
        vpc, key = network.vpc, network.key
        self.security_group = ec2.SecurityGroup(
            scope,
            "DbSg",
            vpc=vpc,
            description=f"{config.prefix}: PostgreSQL, from the services and the rotation",
            allow_all_outbound=False,
        )
        rotation_sg = ec2.SecurityGroup(
            scope,
            "RotationSg",
            vpc=vpc,
            description=f"{config.prefix}: the secret rotation functions",
            allow_all_outbound=False,
        )
        rotation_sg.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(HTTPS_PORT), "Secrets Manager API"
        )
        for what, client in ({**clients, "the rotation": rotation_sg}).items():
            self.security_group.add_ingress_rule(
                client, ec2.Port.tcp(POSTGRES_PORT), f"from {what}"
            )
            client.add_egress_rule(
                self.security_group, ec2.Port.tcp(POSTGRES_PORT), "to PostgreSQL"
            )

        self.instance = self._instance(scope, config, network)
        _alarms(alarms, self.instance, max_connections, peak_connections)
        master_secret = self.instance.secret
        assert master_secret is not None  # from_secret credentials always attach one
        app_secret = rds.DatabaseSecret(
            scope,
            "DbAppSecret",
            username=DB_APP_USER,
            dbname=config.app.replace("-", "_"),
            secret_name=config.secret_name("db"),
            master_secret=master_secret,
            encryption_key=key,
        )
        self.app_secret: secretsmanager.ISecret = app_secret.attach(self.instance)
        _rotations(
            scope,
            config=config,
            network=network,
            rotation_sg=rotation_sg,
            master_secret=master_secret,
            app_secret=self.app_secret,
        )
        _rotation_failures(scope, config.prefix, [master_secret, self.app_secret], alarm_topic)
        self._acknowledge(config)

    def _instance(
        self, scope: Construct, config: EnvConfig, network: NetworkStack
    ) -> rds.DatabaseInstance:
        key = network.key
        engine = rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_17_6)
        parameters = rds.ParameterGroup(
            scope,
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
                scope,
                f"DbLogs{pascal(kind)}",
                log_group_name=f"/aws/rds/instance/{identifier}/{kind}",
                retention=config.log_retention,
                encryption_key=key,
                removal_policy=RemovalPolicy.RETAIN,
            )
            for kind in ("postgresql", "upgrade")
        ]
        master = rds.DatabaseSecret(
            scope,
            "DbMasterSecret",
            username=DB_MASTER_USER,
            secret_name=config.secret_name("db-master"),
            encryption_key=key,
        )
        instance = rds.DatabaseInstance(
            scope,
            "Db",
            instance_identifier=identifier,
            engine=engine,
            instance_type=ec2.InstanceType(config.db_instance_type),
            vpc=network.vpc,
            vpc_subnets=network.private_subnets,
            security_groups=[self.security_group],
            credentials=rds.Credentials.from_secret(master),
            database_name=config.app.replace("-", "_"),
            parameter_group=parameters,
            multi_az=config.db_multi_az,
            storage_type=rds.StorageType.GP3,
            allocated_storage=20,
            max_allocated_storage=200,
            storage_encrypted=True,
            storage_encryption_key=key,
            backup_retention=Duration.days(7),
            copy_tags_to_snapshot=True,
            deletion_protection=True,
            removal_policy=RemovalPolicy.SNAPSHOT,
            iam_authentication=True,
            auto_minor_version_upgrade=True,
            cloudwatch_logs_exports=["postgresql", "upgrade"],
            monitoring_interval=Duration.seconds(60),
            enable_performance_insights=True,
            performance_insight_encryption_key=key,
            ca_certificate=rds.CaCertificate.RDS_CA_RSA2048_G1,
            publicly_accessible=False,
        )
        for group in log_groups:
            instance.node.add_dependency(group)
        return instance

    def _acknowledge(self, config: EnvConfig) -> None:
        monitoring_role = self.instance.node.find_child("MonitoringRole")
        acknowledge_nag(
            monitoring_role,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonRDSEnhancedMonitoringRole]",
            "AWS's policy for RDS enhanced monitoring, the one its documentation prescribes",
        )
        acknowledge_nag(
            self.instance,
            "AwsSolutions-RDS11",
            "the default port: the security group, not the port number, keeps clients out",
        )
        if not config.db_multi_az:
            acknowledge_nag(
                self.instance,
                "AwsSolutions-RDS3",
                "dbMultiAz=false was chosen for this environment (cost); production keeps it",
            )
            skip_checkov(self.instance, "CKV_AWS_157", "dbMultiAz=false chosen for this env")


def _rotations(
    scope: Construct,
    *,
    config: EnvConfig,
    network: NetworkStack,
    rotation_sg: ec2.SecurityGroup,
    master_secret: secretsmanager.ISecret,
    app_secret: secretsmanager.ISecret,
) -> None:
    """The hosted rotation functions and their schedules, every ROTATION_DAYS.

    rotate_immediately_on_update: CloudFormation would rotate as soon as the schedule exists.
    The master's first rotation works then; the app's multi-user rotation clones the `app` role,
    which the init/migration creates only after the stack is deployed, so its first run would
    fail. It first runs after ROTATION_DAYS (or by hand once the role exists: `aws
    secretsmanager rotate-secret`), and any failure reaches the alarm topic.
    """
    for secret, hosted, name, at_once in (
        (
            master_secret,
            secretsmanager.HostedRotation.postgre_sql_single_user(
                function_name=f"{config.prefix}-db-master-rotation",
                vpc=network.vpc,
                vpc_subnets=network.private_subnets,
                security_groups=[rotation_sg],
            ),
            "MasterRotation",
            True,
        ),
        (
            app_secret,
            secretsmanager.HostedRotation.postgre_sql_multi_user(
                master_secret=master_secret,
                function_name=f"{config.prefix}-db-app-rotation",
                vpc=network.vpc,
                vpc_subnets=network.private_subnets,
                security_groups=[rotation_sg],
            ),
            "AppRotation",
            False,
        ),
    ):
        schedule = secretsmanager.RotationSchedule(
            scope,
            name,
            secret=secret,
            hosted_rotation=hosted,
            automatically_after=Duration.days(ROTATION_DAYS),
            rotate_immediately_on_update=at_once,
        )
        # The hosted function decrypts the secret with the environment's key.
        resource = schedule.node.default_child
        assert isinstance(resource, secretsmanager.CfnRotationSchedule)
        resource.add_property_override("HostedRotationLambda.KmsKeyArn", network.key.key_arn)


def _rotation_failures(
    scope: Construct, prefix: str, secrets: list[secretsmanager.ISecret], topic: sns.ITopic
) -> None:
    """A failed rotation of the database's secrets reaches the alarm topic.

    Secrets Manager reports it as a CloudTrail service event (``RotationFailed``), not as a
    metric: an EventBridge rule on it, for these secrets only, publishes to the topic.
    """
    events.Rule(
        scope,
        "DbRotationFailed",
        rule_name=f"{prefix}-db-rotation-failed",
        description="a rotation of the database's secrets failed",
        event_pattern=events.EventPattern(
            source=["aws.secretsmanager"],
            detail_type=["AWS Service Event via CloudTrail"],
            detail={
                "eventName": ["RotationFailed"],
                "additionalEventData": {"SecretId": [s.secret_arn for s in secrets]},
            },
        ),
        targets=[targets.SnsTopic(topic)],
    )


def _alarms(
    alarms: AlarmTopic, instance: rds.DatabaseInstance, max_connections: int, peak: int
) -> None:
    """Connections near max_connections (the next scale-out or deploy would fail), CPU, free
    storage.

    No replica-lag alarm: a Multi-AZ DB *instance* replicates to its standby synchronously and
    publishes no ReplicaLag (only read replicas and Multi-AZ DB clusters do).
    """
    alarms.alarm(
        "DbConnections",
        name="db-connections",
        description=(
            f"database connections above {DB_CONNECTIONS_ALARM_PERCENT}% of max_connections "
            f"({max_connections}); the budget's peak is {peak}"
        ),
        metric=instance.metric_database_connections(
            period=Duration.minutes(1), statistic="Maximum"
        ),
        threshold=max_connections * DB_CONNECTIONS_ALARM_PERCENT // 100,
        comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluation_periods=5,
        datapoints_to_alarm=3,
    )
    alarms.alarm(
        "DbCpu",
        name="db-cpu",
        description=f"database CPU above {DB_CPU_ALARM_PERCENT}% for 15 minutes",
        metric=instance.metric_cpu_utilization(period=Duration.minutes(5)),
        threshold=DB_CPU_ALARM_PERCENT,
        comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods=3,
    )
    alarms.alarm(
        "DbFreeStorage",
        name="db-free-storage",
        description=(
            f"database free storage below {DB_FREE_STORAGE_GIB} GiB: storage autoscaling "
            "is not keeping up or has reached max_allocated_storage"
        ),
        metric=instance.metric_free_storage_space(period=Duration.minutes(5), statistic="Minimum"),
        threshold=DB_FREE_STORAGE_GIB * 1024**3,
        comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        evaluation_periods=2,
    )
