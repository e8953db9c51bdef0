"""The synthesized topology against the seed's figures and the issue's requirements."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match

from infra.testing import Assembly, container, policy_statements
from suite_contract.spec import find_repository_root, load_specs

ROOT = find_repository_root(Path(__file__).parent)
SEED = {  # service: (tasks, cpu, memory)
    "api": (3, "512", "1024"),
    "worker": (2, "1024", "2048"),
    "scheduler": (1, "256", "512"),
}


def test_stacks_are_split_by_lifecycle(assembly: Assembly) -> None:
    assert set(assembly.templates) == {
        "suite-registry",
        "suite-dev-network",
        "suite-dev-platform",
        "suite-dev-api",
        "suite-dev-worker",
        "suite-dev-scheduler",
    }
    # Nothing but the network stack holds the VPC.
    for name, template in assembly.templates.items():
        kinds = {resource["Type"] for resource in template["Resources"].values()}
        assert ("AWS::EC2::VPC" in kinds) == (name == "suite-dev-network")


def test_vpc_spans_two_azs_with_private_subnets_and_a_nat(assembly: Assembly) -> None:
    network = assembly.template("network")
    subnets = assembly.resources("network", "AWS::EC2::Subnet").values()
    zones = {subnet["Properties"]["AvailabilityZone"] for subnet in subnets}
    assert zones == {"eu-west-1a", "eu-west-1b"}
    public = [s for s in subnets if s["Properties"]["MapPublicIpOnLaunch"]]
    assert len(public) == 2
    assert len(subnets) == 4
    network.resource_count_is("AWS::EC2::NatGateway", 1)
    network.resource_count_is("AWS::EC2::FlowLog", 1)
    network.has_resource_properties("AWS::EC2::VPCEndpoint", {"VpcEndpointType": "Gateway"})


def test_without_nat_the_tasks_use_vpc_endpoints(extended: Assembly) -> None:
    network = extended.template("network")
    network.resource_count_is("AWS::EC2::NatGateway", 0)
    endpoints = extended.resources("network", "AWS::EC2::VPCEndpoint").values()
    names = {json.dumps(e["Properties"]["ServiceName"]) for e in endpoints}
    for service in ("ecr.api", "ecr.dkr", "logs", "secretsmanager", "ssm", "sqs", "xray"):
        assert any(f".{service}" in name for name in names), service


def test_cluster_has_enhanced_insights_and_four_capacity_providers(assembly: Assembly) -> None:
    platform = assembly.template("platform")
    platform.has_resource_properties(
        "AWS::ECS::Cluster",
        {"ClusterSettings": [{"Name": "containerInsights", "Value": "enhanced"}]},
    )
    association = next(
        iter(
            assembly.resources("platform", "AWS::ECS::ClusterCapacityProviderAssociations").values()
        )
    )
    providers = association["Properties"]["CapacityProviders"]
    assert "FARGATE" in providers
    assert "FARGATE_SPOT" in providers
    capacity = assembly.resources("platform", "AWS::ECS::CapacityProvider").values()
    assert sorted(c["Properties"]["Name"] for c in capacity) == [
        "suite-dev-ec2",
        "suite-dev-ec2-spot",
    ]
    for provider in capacity:
        group = provider["Properties"]["AutoScalingGroupProvider"]
        assert group["ManagedScaling"]["Status"] == "ENABLED"
        assert group["ManagedDraining"] == "ENABLED"
        assert group["ManagedTerminationProtection"] == "ENABLED"
    groups = assembly.resources("platform", "AWS::AutoScaling::AutoScalingGroup").values()
    on_demand = [g for g in groups if "LaunchTemplate" in g["Properties"]]
    spot = [g for g in groups if "MixedInstancesPolicy" in g["Properties"]]
    assert len(on_demand) == len(spot) == 1
    distribution = spot[0]["Properties"]["MixedInstancesPolicy"]["InstancesDistribution"]
    assert distribution["OnDemandPercentageAboveBaseCapacity"] == 0
    assert all(g["Properties"]["MinSize"] == "0" for g in groups)
    platform.resource_count_is("AWS::EC2::LaunchTemplate", 1)


@pytest.mark.parametrize("service", sorted(SEED))
def test_task_definitions_carry_the_seed_figures(assembly: Assembly, service: str) -> None:
    _, cpu, memory = SEED[service]
    template = assembly.template(service)
    template.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "Cpu": cpu,
            "Memory": memory,
            "NetworkMode": "awsvpc",
            "RequiresCompatibilities": ["FARGATE"],
            "Family": f"suite-dev-{service}",
            "Volumes": [
                {"Name": name} for name in ("tmp", "ssm-managed-agents", "ssm-lib", "ssm-log")
            ],
        },
    )
    app = container(assembly, service, "app")
    assert app["Command"] == load_specs(ROOT)[service].command
    assert app["User"] == "10001"
    assert app["ReadonlyRootFilesystem"] is True
    assert app["StopTimeout"] == load_specs(ROOT)[service].task.stop_timeout
    assert app["MountPoints"][0] == {
        "ContainerPath": "/tmp",
        "ReadOnly": False,
        "SourceVolume": "tmp",
    }
    assert app["LogConfiguration"]["LogDriver"] == "awslogs"
    assert app["DependsOn"] == [{"Condition": "START", "ContainerName": "otel-collector"}]
    environment = {e["Name"]: e["Value"] for e in app["Environment"]}
    assert environment["APP_NAME"] == "suite"
    assert environment["APP_ENV"] == "dev"
    assert environment["SERVICE_NAME"] == service
    assert environment["AWS_REGION"] == "eu-west-1"
    assert environment["TRACING_ENABLED"] == "true"
    assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"
    assert environment["STOP_TIMEOUT"] == str(app["StopTimeout"])
    assert "DB_SECRET" in environment
    assert "QUEUE_URL" in environment
    assert "Secrets" not in app  # by id, fetched at runtime
    collector = container(assembly, service, "otel-collector")
    assert collector["Essential"] is False
    assert collector["ReadonlyRootFilesystem"] is True
    assert "/ecr-public/aws-observability/aws-otel-collector:" in json.dumps(collector["Image"])
    assert "awsxray" in collector["Environment"][0]["Value"]


def test_each_service_has_its_log_group_with_retention(assembly: Assembly) -> None:
    for service in SEED:
        assembly.template(service).has_resource_properties(
            "AWS::Logs::LogGroup",
            {
                "LogGroupName": f"/suite/dev/{service}",
                "RetentionInDays": 30,
                "KmsKeyId": Match.any_value(),
            },
        )


def test_services_run_the_seed_task_counts_and_capacity(assembly: Assembly) -> None:
    api = assembly.template("api")
    api.has_resource_properties(
        "AWS::ECS::Service",
        {
            "DesiredCount": 3,
            "DeploymentController": {"Type": "CODE_DEPLOY"},
            "CapacityProviderStrategy": [
                {"CapacityProvider": "FARGATE", "Base": 2, "Weight": 1},
                {"CapacityProvider": "FARGATE_SPOT", "Weight": 1},
            ],
            "NetworkConfiguration": {
                "AwsvpcConfiguration": Match.object_like({"AssignPublicIp": "DISABLED"})
            },
        },
    )
    worker = assembly.template("worker")
    worker.has_resource_properties(
        "AWS::ECS::Service",
        {
            "DesiredCount": 2,
            "DeploymentConfiguration": Match.object_like(
                {"DeploymentCircuitBreaker": {"Enable": True, "Rollback": True}}
            ),
            "ServiceRegistries": Match.any_value(),
            "CapacityProviderStrategy": [
                {"CapacityProvider": "FARGATE", "Base": 1, "Weight": 1},
                {"CapacityProvider": "FARGATE_SPOT", "Weight": 3},
            ],
        },
    )
    # The scheduler's one task: test_scheduled_jobs.py.


def test_api_is_https_only_behind_waf_with_access_logs(assembly: Assembly) -> None:
    api = assembly.template("api")
    api.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener",
        {
            "Port": 443,
            "Protocol": "HTTPS",
            "SslPolicy": "ELBSecurityPolicy-TLS13-1-2-PQ-2025-09",
            "Certificates": [{"CertificateArn": Match.string_like_regexp("^arn:aws:acm:")}],
        },
    )
    platform = assembly.template("platform")
    platform.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener",
        {
            "Port": 80,
            "DefaultActions": [
                {
                    "Type": "redirect",
                    "RedirectConfig": {
                        "Port": "443",
                        "Protocol": "HTTPS",
                        "StatusCode": "HTTP_301",
                    },
                }
            ],
        },
    )
    platform.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        {
            "Scheme": "internet-facing",
            "LoadBalancerAttributes": Match.array_with(
                [{"Key": "access_logs.s3.enabled", "Value": "true"}]
            ),
        },
    )
    platform.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        {
            "Scheme": "internet-facing",
            "LoadBalancerAttributes": Match.array_with(
                [{"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"}]
            ),
        },
    )
    platform.resource_count_is("AWS::WAFv2::WebACLAssociation", 1)
    acl = next(iter(assembly.resources("platform", "AWS::WAFv2::WebACL").values()))
    groups = {
        rule["Statement"]["ManagedRuleGroupStatement"]["Name"]
        for rule in acl["Properties"]["Rules"]
        if "ManagedRuleGroupStatement" in rule["Statement"]
    }
    assert {"AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"} <= groups
    platform.resource_count_is("AWS::WAFv2::LoggingConfiguration", 1)


def test_worker_alb_is_internal_and_admits_only_the_services(assembly: Assembly) -> None:
    platform = assembly.resources("platform", "AWS::ElasticLoadBalancingV2::LoadBalancer")
    internal = [lb for lb in platform.values() if lb["Properties"]["Scheme"] == "internal"]
    assert len(internal) == 1
    assembly.template("worker").has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener", {"Port": 8080, "Protocol": "HTTP"}
    )
    [group_id] = internal[0]["Properties"]["SecurityGroups"]
    ingress = assembly.templates["suite-dev-platform"]["Resources"][group_id["Fn::GetAtt"][0]][
        "Properties"
    ].get("SecurityGroupIngress", [])
    rules = ingress + [
        r["Properties"]
        for r in assembly.resources("platform", "AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == group_id
    ]
    assert rules
    assert all("CidrIp" not in rule for rule in rules)
    assert all(rule["FromPort"] == 8080 for rule in rules)


def test_api_deploys_blue_green_through_codedeploy(assembly: Assembly) -> None:
    api = assembly.template("api")
    api.has_resource_properties(
        "AWS::CodeDeploy::DeploymentGroup",
        {
            "DeploymentConfigName": "CodeDeployDefault.ECSCanary10Percent5Minutes",
            "DeploymentStyle": {
                "DeploymentOption": "WITH_TRAFFIC_CONTROL",
                "DeploymentType": "BLUE_GREEN",
            },
            "AutoRollbackConfiguration": {
                "Enabled": True,
                "Events": Match.array_with(["DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"]),
            },
            "AlarmConfiguration": Match.object_like({"Enabled": True}),
        },
    )
    api.resource_count_is("AWS::ElasticLoadBalancingV2::TargetGroup", 2)


def test_target_groups_and_idle_timeout_come_from_the_spec(assembly: Assembly) -> None:
    # The same section sets up the local suite's load balancer (tests/test_compose_spec.py).
    balancing = load_specs(ROOT)["api"].load_balancer
    assembly.template("api").has_resource_properties(
        "AWS::ElasticLoadBalancingV2::TargetGroup",
        {
            "HealthCheckPath": "/health",
            "HealthCheckIntervalSeconds": balancing.health_interval_seconds,
            "HealthCheckTimeoutSeconds": balancing.health_timeout_seconds,
            "HealthyThresholdCount": balancing.healthy_threshold,
            "UnhealthyThresholdCount": balancing.unhealthy_threshold,
            "TargetGroupAttributes": Match.array_with(
                [
                    {
                        "Key": "deregistration_delay.timeout_seconds",
                        "Value": str(balancing.deregistration_delay_seconds),
                    }
                ]
            ),
        },
    )
    idle = {"Key": "idle_timeout.timeout_seconds", "Value": str(balancing.idle_timeout_seconds)}
    assembly.template("platform").has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        {"Scheme": "internet-facing", "LoadBalancerAttributes": Match.array_with([idle])},
    )


def test_a_new_api_image_registers_a_revision_and_leaves_the_service_alone(
    assembly: Assembly, extended: Assembly
) -> None:
    """ECS refuses to change a CODE_DEPLOY service's task definition outside CodeDeploy: the
    service names the family, so a new digest changes only the task definition (a new revision
    for `suite release` to deploy) and CloudFormation has nothing to update on the service."""
    images = set()
    for synthesized in (assembly, extended):
        [service] = synthesized.resources("api", "AWS::ECS::Service").values()
        assert service["Properties"]["TaskDefinition"] == "suite-dev-api"
        [task] = synthesized.resources("api", "AWS::ECS::TaskDefinition").values()
        assert task["Properties"]["Family"] == "suite-dev-api"
        images.add(json.dumps(container(synthesized, "api", "app")["Image"]))
    assert len(images) == 2
    assert f"sha256:{'a' * 64}" in "".join(images)


def test_the_native_blue_green_switch(extended: Assembly) -> None:
    reports = extended.template("reports")
    reports.has_resource_properties(
        "AWS::ECS::Service",
        {
            "DeploymentConfiguration": Match.object_like(
                {
                    "Strategy": "BLUE_GREEN",
                    "BakeTimeInMinutes": 10,
                    "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True},
                }
            ),
            "LoadBalancers": [
                Match.object_like(
                    {
                        "AdvancedConfiguration": Match.object_like(
                            {"AlternateTargetGroupArn": Match.any_value()}
                        )
                    }
                )
            ],
        },
    )
    reports.resource_count_is("AWS::CodeDeploy::DeploymentGroup", 0)


def test_api_scales_on_cpu_memory_and_requests_per_task(assembly: Assembly) -> None:
    api = assembly.template("api")
    api.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget", {"MinCapacity": 3, "MaxCapacity": 12}
    )
    for metric, target in (
        ("ECSServiceAverageCPUUtilization", 60),
        ("ECSServiceAverageMemoryUtilization", 75),
    ):
        api.has_resource_properties(
            "AWS::ApplicationAutoScaling::ScalingPolicy",
            {
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": Match.object_like(
                    {
                        "PredefinedMetricSpecification": {"PredefinedMetricType": metric},
                        "TargetValue": target,
                    }
                ),
            },
        )
    policies = assembly.resources("api", "AWS::ApplicationAutoScaling::ScalingPolicy").values()
    [requests] = [
        p["Properties"]["TargetTrackingScalingPolicyConfiguration"]
        for p in policies
        if "CustomizedMetricSpecification"
        in p["Properties"].get("TargetTrackingScalingPolicyConfiguration", {})
    ]
    assert requests["TargetValue"] == 3000
    queries = requests["CustomizedMetricSpecification"]["Metrics"]
    assert {q["Id"] for q in queries} == {"requests", "tasks", "per_task"}
    assert next(q for q in queries if q.get("ReturnData"))["Expression"].startswith("IF(")


def test_worker_tracks_backlog_per_task_cpu_and_memory(assembly: Assembly) -> None:
    worker = assembly.template("worker")
    worker.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget", {"MinCapacity": 2, "MaxCapacity": 20}
    )
    policies = [
        policy["Properties"]
        for policy in assembly.resources(
            "worker", "AWS::ApplicationAutoScaling::ScalingPolicy"
        ).values()
    ]
    # Target tracking only: no step policy whose scale-in could fight another's scale-out.
    assert {policy["PolicyType"] for policy in policies} == {"TargetTrackingScaling"}
    configs = [policy["TargetTrackingScalingPolicyConfiguration"] for policy in policies]
    predefined = {
        config["PredefinedMetricSpecification"]["PredefinedMetricType"]: config["TargetValue"]
        for config in configs
        if "PredefinedMetricSpecification" in config
    }
    assert predefined == {
        "ECSServiceAverageCPUUtilization": 70,
        "ECSServiceAverageMemoryUtilization": 80,
    }
    assert not any(config.get("DisableScaleIn") for config in configs)
    [backlog] = [config for config in configs if "CustomizedMetricSpecification" in config]
    # The spec's acceptable latency x per-task throughput: 60 s x 2 messages/s.
    assert backlog["TargetValue"] == 120
    queries = {q["Id"]: q for q in backlog["CustomizedMetricSpecification"]["Metrics"]}
    assert queries["per_task"]["Expression"] == (
        "IF(FILL(tasks, 0) > 0, FILL(visible, 0) / FILL(tasks, 0), FILL(visible, 0))"
    )
    visible = queries["visible"]["MetricStat"]["Metric"]
    assert (visible["Namespace"], visible["MetricName"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
    )
    assert queries["tasks"]["MetricStat"]["Metric"]["MetricName"] == "RunningTaskCount"
    assert not assembly.resources("worker", "AWS::CloudWatch::Alarm").keys() & {"Backlog"}


def test_queue_has_a_dlq_redrive_and_ssl_only_policy(assembly: Assembly) -> None:
    platform = assembly.template("platform")
    platform.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "QueueName": "suite-dev-jobs",
            "VisibilityTimeout": 60,
            "RedrivePolicy": {"deadLetterTargetArn": Match.any_value(), "maxReceiveCount": 5},
        },
    )
    platform.has_resource_properties("AWS::SQS::Queue", {"QueueName": "suite-dev-jobs-dlq"})
    policies = assembly.resources("platform", "AWS::SQS::QueuePolicy").values()
    assert len(policies) == 2
    for policy in policies:
        [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Effect"] == "Deny"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_database_secrets_rotate_with_alternating_users(assembly: Assembly) -> None:
    platform = assembly.template("platform")
    platform.has_resource_properties(
        "AWS::RDS::DBInstance",
        {
            "Engine": "postgres",
            "StorageEncrypted": True,
            "MultiAZ": True,
            "DeletionProtection": True,
            "PubliclyAccessible": False,
        },
    )
    secrets = {
        s["Properties"]["Name"]: s["Properties"]
        for s in assembly.resources("platform", "AWS::SecretsManager::Secret").values()
    }
    assert set(secrets) == {"suite/dev/db", "suite/dev/db-master"}
    # The app user's secret names the master secret: multi-user rotation clones the user with it.
    assert "masterarn" in json.dumps(secrets["suite/dev/db"]["GenerateSecretString"])
    rotations = assembly.resources("platform", "AWS::SecretsManager::RotationSchedule").values()
    kinds = sorted(r["Properties"]["HostedRotationLambda"]["RotationType"] for r in rotations)
    assert kinds == ["PostgreSQLMultiUser", "PostgreSQLSingleUser"]
    for rotation in rotations:
        assert rotation["Properties"]["RotationRules"]["ScheduleExpression"] == "rate(30 days)"
        assert "KmsKeyArn" in rotation["Properties"]["HostedRotationLambda"]


def test_task_roles_are_least_privilege(assembly: Assembly) -> None:
    api = policy_statements(assembly, "api", "TaskRole")
    actions = {action for s in api for action in _list(s["Action"])}
    assert "sqs:SendMessage" in actions
    assert "sqs:ReceiveMessage" not in actions
    ssm = next(s for s in api if s.get("Sid") == "OwnParameters")
    assert sorted(_list(ssm["Resource"])) == sorted(
        f"arn:aws:ssm:eu-west-1:123456789012:parameter/suite/dev/{scope}{suffix}"
        for scope in ("shared", "api")
        for suffix in ("", "/*")
    )
    secrets = next(s for s in api if s.get("Sid") == "OwnSecrets")
    assert sorted(_list(secrets["Action"])) == [
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
    ]
    assert len(_list(secrets["Resource"])) == 1
    traces = next(s for s in api if s.get("Sid") == "Traces")
    assert "xray:PutTraceSegments" in traces["Action"]
    worker = policy_statements(assembly, "worker", "TaskRole")
    worker_actions = {action for s in worker for action in _list(s["Action"])}
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "ecs:UpdateTaskProtection"} <= worker_actions
    assert "sqs:SendMessage" not in worker_actions
    # reconcile-dlq: the scheduler consumes the jobs queue's dead-letter queue (and its own
    # firings queue: test_scheduled_jobs.py), and no other.
    scheduler = policy_statements(assembly, "scheduler", "TaskRole")
    consumed = [
        resource
        for s in scheduler
        if "sqs:DeleteMessage" in _list(s["Action"])
        for resource in _list(s["Resource"])
    ]
    assert len(consumed) == 2
    assert sorted("firings" in json.dumps(r).lower() for r in consumed) == [False, True]
    assert (
        "dlq" in json.dumps([r for r in consumed if "firings" not in json.dumps(r).lower()]).lower()
    )


def test_alarms_cover_5xx_unhealthy_hosts_queues_and_scheduler_runs(assembly: Assembly) -> None:
    names = {
        stack: {
            a["Properties"]["AlarmName"]
            for a in assembly.resources(stack, "AWS::CloudWatch::Alarm").values()
            if "AlarmName" in a["Properties"]
        }
        for stack in ("api", "platform", "scheduler")
    }
    assert {"suite-dev-api-5xx-rate", "suite-dev-api-unhealthy-hosts"} <= names["api"]
    assert {"suite-dev-jobs-dlq-not-empty", "suite-dev-jobs-oldest-message"} <= names["platform"]
    assert {"suite-dev-scheduler-run-failures", "suite-dev-scheduler-schedules-dlq"} <= names[
        "scheduler"
    ]
    assembly.template("scheduler").has_resource_properties(
        "AWS::Logs::MetricFilter",
        {"FilterPattern": Match.string_like_regexp(r'\$\.status != "succeeded"')},
    )


def test_parameters_and_flags_under_the_service_prefixes(assembly: Assembly) -> None:
    assembly.template("platform").has_resource_properties(
        "AWS::SSM::Parameter", {"Name": "/suite/dev/shared/log_level"}
    )
    assembly.template("api").has_resource_properties(
        "AWS::SSM::Parameter", {"Name": "/suite/dev/api/flags/accept_jobs", "Value": "true"}
    )


def test_cloud_map_namespace(assembly: Assembly) -> None:
    assembly.template("platform").has_resource_properties(
        "AWS::ServiceDiscovery::PrivateDnsNamespace", {"Name": "dev.suite.internal"}
    )
    assembly.template("worker").has_resource_properties(
        "AWS::ServiceDiscovery::Service", Match.object_like({"Name": "worker"})
    )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
