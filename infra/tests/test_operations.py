"""Day-one and day-two behaviour: rotation that works on the first deploy and reports failures,
Spot instances that drain."""

from __future__ import annotations

import json

from infra.testing import Assembly


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
