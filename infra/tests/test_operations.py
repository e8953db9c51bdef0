"""Day-one and day-two behaviour: rotation that works on the first deploy and reports failures,
Spot instances that drain."""

from __future__ import annotations

import json

import pytest

from infra.testing import Assembly, container, policy_statements


def test_the_app_secret_does_not_rotate_before_its_role_exists(assembly: Assembly) -> None:
    schedules = {
        schedule["Properties"]["HostedRotationLambda"]["RotationType"]: schedule["Properties"]
        for schedule in assembly.resources(
            "platform", "AWS::SecretsManager::RotationSchedule"
        ).values()
    }
    assert schedules["PostgreSQLMultiUser"]["RotateImmediatelyOnUpdate"] is False
    assert schedules["PostgreSQLSingleUser"].get("RotateImmediatelyOnUpdate", True) is True


def test_a_failed_rotation_reaches_the_alarm_topic(assembly: Assembly) -> None:
    [rule] = [
        rule["Properties"]
        for rule in assembly.resources("platform", "AWS::Events::Rule").values()
        if "aws.secretsmanager" in rule["Properties"]["EventPattern"]["source"]
    ]
    pattern = rule["EventPattern"]
    assert pattern["detail"]["eventName"] == ["RotationFailed"]
    assert len(pattern["detail"]["additionalEventData"]["SecretId"]) == 2  # master and app
    [target] = rule["Targets"]
    [topic] = assembly.resources("platform", "AWS::SNS::Topic")
    assert target["Arn"] == {"Ref": topic}
    # The topic is encrypted: EventBridge may use the key.
    [key] = assembly.resources("network", "AWS::KMS::Key").values()
    assert any(
        "events.amazonaws.com" in json.dumps(statement["Principal"])
        and "kms:GenerateDataKey*" in statement["Action"]
        for statement in key["Properties"]["KeyPolicy"]["Statement"]
    )


def test_spot_instances_drain_on_an_interruption_notice(assembly: Assembly) -> None:
    [template] = assembly.resources("platform", "AWS::EC2::LaunchTemplate").values()
    user_data = json.dumps(template["Properties"]["LaunchTemplateData"]["UserData"])
    assert "ECS_ENABLE_SPOT_INSTANCE_DRAINING=true >> /etc/ecs/ecs.config" in user_data
    [spot] = [
        group["Properties"]
        for group in assembly.resources("platform", "AWS::AutoScaling::AutoScalingGroup").values()
        if "MixedInstancesPolicy" in group["Properties"]
    ]
    launch = spot["MixedInstancesPolicy"]["LaunchTemplate"]["LaunchTemplateSpecification"]
    assert "InstanceTemplate" in json.dumps(launch)


@pytest.mark.parametrize("service", ["api", "worker", "scheduler"])
def test_ecs_exec_is_encrypted_logged_and_works_on_a_read_only_root(
    assembly: Assembly, service: str
) -> None:
    [cluster] = assembly.resources("platform", "AWS::ECS::Cluster").values()
    configuration = cluster["Properties"]["Configuration"]["ExecuteCommandConfiguration"]
    assert "KmsKeyId" in configuration
    assert configuration["Logging"] == "OVERRIDE"
    log = configuration["LogConfiguration"]
    assert log["CloudWatchEncryptionEnabled"] is True
    [exec_logs] = [
        group["Properties"]
        for group in assembly.resources("platform", "AWS::Logs::LogGroup").values()
        if group["Properties"].get("LogGroupName") == "/suite/dev/exec"
    ]
    assert "KmsKeyId" in exec_logs

    app = container(assembly, service, "app")
    assert app["ReadonlyRootFilesystem"] is True
    assert app["LinuxParameters"]["InitProcessEnabled"] is True
    mounted = {mount["ContainerPath"] for mount in app["MountPoints"] if not mount["ReadOnly"]}
    assert {"/managed-agents", "/var/lib/amazon/ssm", "/var/log/amazon/ssm"} <= mounted

    statements = policy_statements(assembly, service, "TaskRole")
    channels = [s for s in statements if "ssmmessages:CreateControlChannel" in s["Action"]]
    if service != "scheduler":  # an ECS service: ECS Exec is on
        [ecs_service] = assembly.resources(service, "AWS::ECS::Service").values()
        assert ecs_service["Properties"]["EnableExecuteCommand"] is True
        [channel] = channels
        assert sorted(channel["Action"]) == [
            "ssmmessages:CreateControlChannel",
            "ssmmessages:CreateDataChannel",
            "ssmmessages:OpenControlChannel",
            "ssmmessages:OpenDataChannel",
        ]
    by_sid = {s.get("Sid"): s for s in statements}
    assert by_sid["ExecSessionKey"]["Action"] == "kms:Decrypt"
    assert sorted(by_sid["ExecSessionLogs"]["Action"]) == [
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    ]
    exec_arn = "arn:aws:logs:eu-west-1:123456789012:log-group:/suite/dev/exec"
    assert by_sid["ExecSessionLogs"]["Resource"] == [exec_arn, f"{exec_arn}:log-stream:*"]
