"""A new folder under services/ is a new stack (task definition, role, log group) and a new
repository in the registry."""

from __future__ import annotations

from aws_cdk.assertions import Match

from infra.testing import REGISTRY, Assembly, container


def test_a_new_service_folder_gets_its_own_stack(extended: Assembly) -> None:
    assert "suite-dev-reports" in extended.templates
    reports = extended.template("reports")
    reports.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "Family": "suite-dev-reports",
            "Cpu": "512",
            "Memory": "1024",
            # On EC2 Spot capacity, so the definition is EC2-compatible too.
            "RequiresCompatibilities": Match.array_with(["EC2"]),
            "TaskRoleArn": Match.any_value(),
        },
    )
    reports.has_resource_properties(
        "AWS::IAM::Role",
        {"Description": "suite-dev: what reports's code may call"},
    )
    reports.has_resource_properties(
        "AWS::Logs::LogGroup", {"LogGroupName": "/suite/dev/reports", "RetentionInDays": 30}
    )
    reports.has_resource_properties(
        "AWS::ECS::Service",
        {
            "ServiceName": "reports",
            "DesiredCount": 1,
            "CapacityProviderStrategy": [{"CapacityProvider": "suite-dev-ec2-spot", "Weight": 1}],
        },
    )
    reports.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget", {"MinCapacity": 0, "MaxCapacity": 4}
    )
    assert "/suite/reports@sha256:" in str(container(extended, "reports", "app")["Image"])
    # Its repository joins the registry's, shared by every environment.
    extended.template(REGISTRY).has_resource_properties(
        "AWS::ECR::Repository", {"RepositoryName": "suite/reports"}
    )
    extended.template(REGISTRY).resource_count_is("AWS::ECR::Repository", 4)
    platform = extended.template("platform")
    # Its own internal load balancer; the three others are untouched.
    platform.resource_count_is("AWS::ElasticLoadBalancingV2::LoadBalancer", 3)
    for other in ("api", "worker", "scheduler"):
        assert "reports" not in str(extended.templates[f"suite-dev-{other}"])


def test_the_cost_switches(extended: Assembly) -> None:
    extended.template("platform").has_resource_properties(
        "AWS::RDS::DBInstance", {"MultiAZ": False}
    )
