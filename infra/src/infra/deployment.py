"""How a service's new tasks replace its old ones: one class per deployment mode of the spec.

Each mode tells the ECS service its deployment settings and, for a service behind a load
balancer, owns the production listener and the target groups that mode needs:

- :class:`Rolling`: ECS replaces tasks in place behind one target group; the circuit breaker
  rolls a failing deployment back.
- :class:`EcsBlueGreen`: ECS starts the new colour in the second target group and moves the
  listener's production rule to it after the bake time.
- :class:`CodeDeployBlueGreen`: CodeDeploy shifts the listener between the two groups (canary,
  linear or all at once) and rolls back on the service's alarms.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_servicediscovery as servicediscovery
from constructs import Construct

from infra.checks import acknowledge_nag, skip_checkov
from infra.edge import LoadBalancer
from infra.network import HTTPS_PORT
from infra.service_config import ServiceProps
from infra.task_definition import APP_CONTAINER
from suite_contract.spec import DeploymentStrategy

__all__ = [
    "CodeDeployBlueGreen",
    "Deployment",
    "DeploymentSettings",
    "EcsBlueGreen",
    "Rolling",
    "Routing",
    "deployment_for",
]

# The production rule ECS-native blue/green moves between the colours: after the edge's rules.
PRODUCTION_RULE_PRIORITY = 100


@dataclass(frozen=True)
class DeploymentSettings:
    """What the ECS service itself is told (None: ECS's default)."""

    controller: ecs.DeploymentController | None = None
    circuit_breaker: ecs.DeploymentCircuitBreaker | None = None
    cloud_map: ecs.CloudMapOptions | None = None
    strategy: ecs.DeploymentStrategy | None = None
    bake_time: Duration | None = None


@dataclass(frozen=True)
class Routing:
    """A load-balanced service, its production listener and its target groups."""

    service: ecs.BaseService
    listener: elbv2.ApplicationListener
    target_groups: tuple[elbv2.ApplicationTargetGroup, ...]
    steady_target: elbv2.ApplicationTargetGroup | None
    """The group a further listener rule may forward to for good; None where the deployment
    moves a single production rule between the colours (a second rule would not follow)."""


class Deployment(ABC):
    """A deployment mode: the service's settings, and its listener and target groups."""

    colours: tuple[str, ...] = ("Blue",)

    def __init__(self, scope: Construct, props: ServiceProps) -> None:
        self.scope = scope
        self.config, self.platform, self.spec = props.config, props.platform, props.spec

    @property
    @abstractmethod
    def settings(self) -> DeploymentSettings: ...

    @abstractmethod
    def route(self, service: ecs.BaseService) -> Routing:
        """The target groups and the production listener, ``service`` registered behind it."""

    # A no-op but for CodeDeploy.
    def roll_back_on(self, routing: Routing, alarms: Sequence[cloudwatch.IAlarm]) -> None:  # noqa: B027
        """Roll a deployment of ``routing``'s service back while one of ``alarms`` fires. Only
        CodeDeploy does: ECS's circuit breaker watches the tasks themselves."""

    def _forward(self, service: ecs.BaseService) -> Routing:
        """The listener forwards to the first group, where ``service`` registers its tasks."""
        target_groups = self._target_groups()
        listener = self._listener(elbv2.ListenerAction.forward([target_groups[0]]))
        service.attach_to_application_target_group(target_groups[0])
        return Routing(service, listener, target_groups, steady_target=target_groups[0])

    def _cloud_map(self) -> ecs.CloudMapOptions | None:
        """Every task in Cloud Map, for a service with a port (its callers' fan-out)."""
        if self.spec.port is None:
            return None
        return ecs.CloudMapOptions(
            cloud_map_namespace=self.platform.namespace,
            name=self.spec.name,
            dns_record_type=servicediscovery.DnsRecordType.A,
            dns_ttl=Duration.seconds(10),
        )

    def _target_groups(self) -> tuple[elbv2.ApplicationTargetGroup, ...]:
        spec = self.spec
        assert spec.port is not None
        balancing = spec.load_balancer
        return tuple(
            elbv2.ApplicationTargetGroup(
                self.scope,
                f"Tg{colour}",
                vpc=self.platform.vpc,
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
            for colour in self.colours
        )

    def _listener(self, default_action: elbv2.ListenerAction) -> elbv2.ApplicationListener:
        """The production listener on the service's load balancer: HTTPS on an external one,
        the service's port inside the VPC."""
        spec = self.spec
        assert spec.port is not None
        lb: LoadBalancer = self.platform.load_balancers[spec.name]
        if lb.external:
            return elbv2.ApplicationListener(
                self.scope,
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
            self.scope,
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


class Rolling(Deployment):
    """ECS's rolling update (the spec's min healthy and max percent), circuit breaker on."""

    @property
    def settings(self) -> DeploymentSettings:
        return DeploymentSettings(
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            cloud_map=self._cloud_map(),
        )

    def route(self, service: ecs.BaseService) -> Routing:
        return self._forward(service)


class EcsBlueGreen(Deployment):
    """ECS-native blue/green: ECS moves the production rule's weights to the new colour."""

    colours = ("Blue", "Green")

    @property
    def settings(self) -> DeploymentSettings:
        return DeploymentSettings(
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            cloud_map=self._cloud_map(),
            strategy=ecs.DeploymentStrategy.BLUE_GREEN,
            bake_time=Duration.minutes(self.spec.deployment.bake_minutes),
        )

    def route(self, service: ecs.BaseService) -> Routing:
        assert self.spec.port is not None
        blue, green = self._target_groups()
        listener = self._listener(
            elbv2.ListenerAction.fixed_response(
                404, content_type="text/plain", message_body="not found"
            )
        )
        # ECS moves the weights of this rule between the two target groups.
        rule = elbv2.ApplicationListenerRule(
            self.scope,
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
            container_port=self.spec.port,
            alternate_target=ecs.AlternateTarget(
                "Alternate",
                alternate_target_group=green,
                production_listener=ecs.ListenerRuleConfiguration.application_listener_rule(rule),
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
        return Routing(service, listener, (blue, green), steady_target=None)


class CodeDeployBlueGreen(Deployment):
    """Blue/green through CodeDeploy: it shifts the listener between the two groups, and rolls
    back by itself (failed, stopped or alarming deployments), so no circuit breaker.

    CodeDeploy's task sets only know load balancers: no Cloud Map.
    """

    colours = ("Blue", "Green")

    @property
    def settings(self) -> DeploymentSettings:
        return DeploymentSettings(
            controller=ecs.DeploymentController(type=ecs.DeploymentControllerType.CODE_DEPLOY)
        )

    def route(self, service: ecs.BaseService) -> Routing:
        return self._forward(service)

    def roll_back_on(self, routing: Routing, alarms: Sequence[cloudwatch.IAlarm]) -> None:
        """The deployment group: CodeDeploy shifts ``routing``'s listener from one group to the
        other, and rolls back a failed, stopped or alarming deployment."""
        config, spec = self.config, self.spec
        application = codedeploy.EcsApplication(
            self.scope, "DeployApplication", application_name=f"{config.prefix}-{spec.name}"
        )
        group = codedeploy.EcsDeploymentGroup(
            self.scope,
            "DeploymentGroup",
            application=application,
            deployment_group_name=f"{config.prefix}-{spec.name}",
            service=routing.service,
            blue_green_deployment_config=codedeploy.EcsBlueGreenDeploymentConfig(
                blue_target_group=routing.target_groups[0],
                green_target_group=routing.target_groups[1],
                listener=routing.listener,
                termination_wait_time=Duration.minutes(spec.deployment.bake_minutes),
            ),
            deployment_config=codedeploy.EcsDeploymentConfig.from_ecs_deployment_config_name(
                self.scope, "DeployConfig", spec.deployment.codedeploy_config
            ),
            auto_rollback=codedeploy.AutoRollbackConfig(
                failed_deployment=True, stopped_deployment=True, deployment_in_alarm=True
            ),
            alarms=list(alarms),
        )
        acknowledge_nag(
            group.role,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AWSCodeDeployRoleForECS]",
            "AWS's policy for CodeDeploy's ECS blue/green, the one its documentation prescribes",
        )


def deployment_for(scope: Construct, props: ServiceProps) -> Deployment:
    """The spec's ``[deployment]`` mode."""
    deployment = props.spec.deployment
    mode: type[Deployment]
    if deployment.strategy is not DeploymentStrategy.BLUE_GREEN:
        mode = Rolling
    elif deployment.through_codedeploy:
        mode = CodeDeployBlueGreen
    else:
        mode = EcsBlueGreen
    return mode(scope, props)
