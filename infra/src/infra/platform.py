"""The platform stack: what an environment's services share and what outlives any one of them.

The cluster and its capacity providers, the Cloud Map namespace, one load balancer per service
(so a service's address survives redeploying or replacing its stack), the queues (they hold work
in flight), the database with its rotating secrets, the WAF web ACL, the access-log bucket, the
alarm topic and the shared parameters. The images are not the environment's: their repositories
are in the registry stack.

Each part is built by its own module, into this stack (so its resources' logical ids are the
stack's own: moving code never replaces a database or a queue).
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Environment, RemovalPolicy, Stack
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_servicediscovery as servicediscovery
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from infra.alarms import AlarmTopic, image_findings
from infra.capacity import Ec2Capacity
from infra.config import EnvConfig
from infra.connections import check_budget
from infra.dashboard import Dashboard
from infra.database import Database
from infra.edge import Edge
from infra.identity import Identity
from infra.network import NetworkStack
from infra.queues import Queues
from infra.service_network import connect_services, task_security_groups
from suite_contract.spec import Exposure, ServiceSpec

__all__ = ["PlatformStack"]


class PlatformStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvConfig,
        network: NetworkStack,
        specs: Mapping[str, ServiceSpec],
        env: Environment,
        description: str,
    ) -> None:
        super().__init__(scope, id, env=env, description=description)
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
        alarms = AlarmTopic(self, topic=self.alarm_topic, name_prefix=config.prefix)

        self.task_security_groups = task_security_groups(
            self, prefix=config.prefix, vpc=self.vpc, specs=specs
        )
        self.namespace = servicediscovery.PrivateDnsNamespace(
            self,
            "Namespace",
            name=f"{config.env}.{config.app}.internal",
            vpc=self.vpc,
            description=f"{config.prefix} service discovery",
        )
        self.exec_logs_name = f"/{config.app}/{config.env}/exec"
        self.cluster = self._cluster()
        self.capacity_providers = Ec2Capacity(
            self,
            config=config,
            network=network,
            cluster=self.cluster,
            alarm_topic=self.alarm_topic,
        ).providers

        queues = Queues(self, prefix=config.prefix, specs=specs, alarms=alarms)
        self.queues, self.dead_letter_queues = queues.queues, queues.dead_letter_queues
        self.connections, self.max_connections = check_budget(
            specs,
            instance_type=config.db_instance_type,
            max_connections=config.db_max_connections,
        )
        database = Database(
            self,
            config=config,
            network=network,
            clients={
                name: group
                for name, group in self.task_security_groups.items()
                if specs[name].uses_database
            },
            max_connections=self.max_connections,
            peak_connections=self.peak_connections,
            alarms=alarms,
            alarm_topic=self.alarm_topic,
        )
        self.database, self.db_secret = database.instance, database.app_secret

        ssm.StringParameter(
            self,
            "SharedLogLevel",
            parameter_name=f"{config.parameter_path('shared')}/log_level",
            string_value="INFO",
            description="log level of every service unless its own prefix sets one",
        )

        self.auth = Identity(self, config=config, specs=specs).auth
        self.load_balancers = Edge(
            self,
            config=config,
            network=network,
            exposed={n: s for n, s in specs.items() if s.exposure is not Exposure.NONE},
            alarms=alarms,
        ).load_balancers
        connect_services(specs, self.task_security_groups, self.load_balancers)
        image_findings(self, app=config.app, prefix=config.prefix, topic=self.alarm_topic)
        Dashboard(
            self,
            prefix=config.prefix,
            region=config.region,
            load_balancers=self.load_balancers,
            queues=self.queues,
            dead_letter_queues=self.dead_letter_queues,
            services=specs,
            capacity_providers=self.capacity_providers,
            database=self.database,
        )

    def _cluster(self) -> ecs.Cluster:
        """The cluster, with ECS Exec sessions encrypted with the environment key and every
        session's commands and output recorded in an encrypted log group."""
        config = self.config
        exec_logs = logs.LogGroup(
            self,
            "ExecLogs",
            log_group_name=self.exec_logs_name,
            retention=config.log_retention,
            encryption_key=self.key,
            removal_policy=RemovalPolicy.RETAIN,
        )
        return ecs.Cluster(
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
                    cloud_watch_log_group=exec_logs, cloud_watch_encryption_enabled=True
                ),
            ),
        )

    def secret(self, service: str, name: str) -> secretsmanager.ISecret:
        """The secret a spec's ``[config] secrets`` names ``name`` (``db``: the app user's)."""
        secrets = {"db": self.db_secret}
        try:
            return secrets[name]
        except KeyError:
            raise ValueError(
                f"{service}: secret {name!r} is not one the platform provides ({sorted(secrets)})"
            ) from None

    @property
    def peak_connections(self) -> int:
        """The services' peak connections, the margin left out."""
        return sum(row.peak for row in self.connections)
