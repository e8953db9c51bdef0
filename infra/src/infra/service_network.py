"""The service network: one security group per service's tasks, and who may reach it.

What admits a service's tasks (its load balancer, the services that call it) and what they may
reach (the database when they use it, the services they call) is written per service, so no
task is reachable by a service that has no business with it.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from infra.edge import LoadBalancer
from infra.names import pascal
from infra.network import HTTPS_PORT
from suite_contract.spec import Exposure, ServiceSpec

__all__ = ["connect_services", "task_security_groups"]


def task_security_groups(
    scope: Construct, *, prefix: str, vpc: ec2.IVpc, specs: Mapping[str, ServiceSpec]
) -> dict[str, ec2.SecurityGroup]:
    """Each service's tasks' group, by service name: out to AWS APIs only, in from nobody yet."""
    groups = {}
    for name in specs:
        group = ec2.SecurityGroup(
            scope,
            f"Tasks{pascal(name)}Sg",
            vpc=vpc,
            description=f"{prefix}: tasks of {name}",
            allow_all_outbound=False,
        )
        # AWS APIs, through the NAT gateway or the VPC endpoints.
        group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(HTTPS_PORT), "AWS APIs over HTTPS")
        groups[name] = group
    return groups


def connect_services(
    specs: Mapping[str, ServiceSpec],
    groups: Mapping[str, ec2.SecurityGroup],
    load_balancers: Mapping[str, LoadBalancer],
) -> None:
    """Each service's tasks admit their own load balancer and the services that call them.

    A call goes to every task through Cloud Map (an ops view, a fan-out) or to any task
    through the internal load balancer: a caller is admitted by both, nobody else by either.
    """
    for name, spec in specs.items():
        lb = load_balancers.get(name)
        if lb is not None:
            assert spec.port is not None
            lb.security_group.connections.allow_to(
                groups[name], ec2.Port.tcp(spec.port), f"{name}'s load balancer to its tasks"
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
            caller = groups[name]
            for group, what in (
                (groups[callee], "tasks (Cloud Map)"),
                (load_balancers[callee].security_group, "internal ALB"),
            ):
                caller.connections.allow_to(
                    group, ec2.Port.tcp(target.port), f"{name} to {callee}'s {what}"
                )
