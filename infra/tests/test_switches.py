"""The production switches of the environment (CDK context): each off by default, each tested on."""

from __future__ import annotations

import json

from aws_cdk import App, Environment
from aws_cdk.assertions import Template

from infra.config import EnvConfig
from infra.feature_flags import CDK_JSON
from infra.network import NetworkStack
from infra.testing import REGISTRY, Assembly

CONTEXT = json.loads(CDK_JSON.read_text())["context"]


def test_the_switches_are_off_unless_the_context_says_so() -> None:
    config = EnvConfig.from_context(App(context=CONTEXT).node)
    assert (config.shield_advanced, config.ecr_enhanced_scanning) == (False, False)
    assert config.nat_gateways == 1


def test_a_nat_gateway_per_availability_zone() -> None:
    # natGateways = maxAzs: an AZ's outage takes no other AZ's egress with it.
    app = App(context=CONTEXT | {"natGateways": "2", "maxAzs": 2})
    config = EnvConfig.from_context(app.node)
    network = NetworkStack(
        app, "Network", config=config, env=Environment(account=config.account, region=config.region)
    )
    template = Template.from_stack(network)
    template.resource_count_is("AWS::EC2::NatGateway", 2)
    routes = template.find_resources("AWS::EC2::Route", {"Properties": {"NatGatewayId": {}}})
    assert len({json.dumps(route["Properties"]["NatGatewayId"]) for route in routes.values()}) == 2


def test_shield_advanced_protects_the_internet_facing_load_balancer(
    assembly: Assembly, extended: Assembly
) -> None:
    assert not assembly.resources("platform", "AWS::Shield::Protection")
    [protection] = extended.resources("platform", "AWS::Shield::Protection").values()
    external = [
        name
        for name, lb in extended.resources(
            "platform", "AWS::ElasticLoadBalancingV2::LoadBalancer"
        ).items()
        if lb["Properties"]["Scheme"] == "internet-facing"
    ]
    assert protection["Properties"]["ResourceArn"] == {"Ref": external[0]}


def test_ecr_enhanced_scanning_of_the_apps_repositories(
    assembly: Assembly, extended: Assembly
) -> None:
    assert not assembly.resources(REGISTRY, "AWS::ECR::RegistryScanningConfiguration")
    [scanning] = extended.resources(REGISTRY, "AWS::ECR::RegistryScanningConfiguration").values()
    assert scanning["Properties"]["ScanType"] == "ENHANCED"
    [rule] = scanning["Properties"]["Rules"]
    assert rule["ScanFrequency"] == "CONTINUOUS_SCAN"
    assert rule["RepositoryFilters"] == [{"Filter": "suite/*", "FilterType": "WILDCARD"}]
