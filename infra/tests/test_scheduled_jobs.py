"""The scheduler: an ECS service of one task, fed by EventBridge Scheduler through a queue."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk.assertions import Match

from infra.task_definition import HEALTHCHECK
from infra.testing import Assembly, container, policy_statements
from scheduler.jobs import registry
from scheduler.settings import Settings
from servicekit.scheduling import FIRINGS_MARGIN
from suite_contract.spec import find_repository_root, load_specs

SPEC = load_specs(find_repository_root())["scheduler"]


def _queue(assembly: Assembly, name: str) -> tuple[str, dict[str, Any]]:
    [(logical_id, queue)] = [
        (logical_id, queue)
        for logical_id, queue in assembly.resources("scheduler", "AWS::SQS::Queue").items()
        if queue["Properties"]["QueueName"] == name
    ]
    return logical_id, queue["Properties"]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_the_scheduler_is_one_always_on_task_on_regular_fargate(assembly: Assembly) -> None:
    scheduler = assembly.template("scheduler")
    scheduler.resource_count_is("AWS::ECS::Service", 1)
    scheduler.has_resource_properties(
        "AWS::ECS::Service",
        {
            "ServiceName": "scheduler",
            "DesiredCount": 1,
            "CapacityProviderStrategy": [{"CapacityProvider": "FARGATE", "Weight": 1}],
            "DeploymentConfiguration": Match.object_like(
                {"MinimumHealthyPercent": 100, "MaximumPercent": 200}
            ),
        },
    )
    # min = max = desired: nothing scales it.
    scheduler.resource_count_is("AWS::ApplicationAutoScaling::ScalableTarget", 0)
    app = container(assembly, "scheduler", "app")
    assert app["Command"] == ["scheduler", "serve"]
    assert app["HealthCheck"]["Command"] == ["CMD", HEALTHCHECK, "8081", "/health"]
    firings_id, _ = _queue(assembly, "suite-dev-scheduler-firings")
    variables = {item["Name"]: item["Value"] for item in app["Environment"]}
    assert variables["FIRINGS_QUEUE_URL"] == {"Ref": firings_id}
    assert "LOCAL_CLOCK" not in variables  # EventBridge Scheduler is the clock in AWS


def test_each_registry_job_is_a_schedule_sending_its_firing_to_the_queue(
    assembly: Assembly,
) -> None:
    firings_id, _ = _queue(assembly, "suite-dev-scheduler-firings")
    schedules_dlq_id, _ = _queue(assembly, "suite-dev-scheduler-schedules-dlq")
    schedules = assembly.resources("scheduler", "AWS::Scheduler::Schedule").values()
    expected = {job["name"]: job for job in registry.export()}
    assert {s["Properties"]["Name"] for s in schedules} == set(expected)
    for schedule in schedules:
        props = schedule["Properties"]
        job = expected[props["Name"]]
        assert props["GroupName"] == {"Ref": Match.any_value()} or props["GroupName"]
        assert props["ScheduleExpression"] == job["expression"]
        assert props["ScheduleExpressionTimezone"] == job["timezone"]
        assert props["FlexibleTimeWindow"] == {"Mode": "OFF"}
        target = props["Target"]
        assert target["Arn"] == {"Fn::GetAtt": [firings_id, "Arn"]}
        assert json.loads(target["Input"]) == {
            "job": job["name"],
            "slot": "<aws.scheduler.scheduled-time>",
        }
        assert target["RetryPolicy"] == {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 900}
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [schedules_dlq_id, "Arn"]}}
        assert "EcsParameters" not in target


def test_the_firings_queue_outlasts_the_longest_run_and_has_its_dlq(assembly: Assembly) -> None:
    dlq_id, dlq = _queue(assembly, "suite-dev-scheduler-firings-dlq")
    _, firings = _queue(assembly, "suite-dev-scheduler-firings")
    assert firings["SqsManagedSseEnabled"] is True
    assert dlq["SqsManagedSseEnabled"] is True
    assert firings["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
        "maxReceiveCount": 5,
    }
    longest = max(job.timeout for job in registry)
    assert firings["VisibilityTimeout"] == longest + SPEC.task.stop_timeout + FIRINGS_MARGIN
    # What the service refuses to start without: a redelivered firing finds a dead run dead.
    defaults = Settings.model_fields
    reported = longest + defaults["stop_grace"].default + defaults["report_margin"].default
    assert firings["VisibilityTimeout"] >= reported
    # Every queue of the stack refuses plain HTTP.
    policies = assembly.resources("scheduler", "AWS::SQS::QueuePolicy").values()
    assert len(policies) == 3
    for policy in policies:
        [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_schedules_may_only_send_to_the_firings_queue_and_the_task_consumes_it(
    assembly: Assembly,
) -> None:
    firings_id, _ = _queue(assembly, "suite-dev-scheduler-firings")
    firings_dlq_id, _ = _queue(assembly, "suite-dev-scheduler-firings-dlq")
    schedules_dlq_id, _ = _queue(assembly, "suite-dev-scheduler-schedules-dlq")
    statements = policy_statements(assembly, "scheduler", "SchedulerRole")
    granted = {
        (action, json.dumps(resource))
        for s in statements
        for action in _list(s["Action"])
        for resource in _list(s["Resource"])
    }
    assert granted == {
        ("sqs:SendMessage", json.dumps({"Fn::GetAtt": [firings_id, "Arn"]})),
        ("sqs:SendMessage", json.dumps({"Fn::GetAtt": [schedules_dlq_id, "Arn"]})),
    }
    [role] = [
        r
        for logical_id, r in assembly.resources("scheduler", "AWS::IAM::Role").items()
        if logical_id.startswith("SchedulerRole")
    ]
    [trust] = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}

    task = policy_statements(assembly, "scheduler", "TaskRole")
    on_firings = {
        action
        for s in task
        if json.dumps({"Fn::GetAtt": [firings_id, "Arn"]}) in json.dumps(s["Resource"])
        for action in _list(s["Action"])
    }
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"} <= on_firings
    assert "sqs:SendMessage" not in on_firings
    on_dlq = {
        action
        for s in task
        if json.dumps({"Fn::GetAtt": [firings_dlq_id, "Arn"]}) in json.dumps(s["Resource"])
        for action in _list(s["Action"])
    }
    assert "sqs:SendMessage" in on_dlq  # a poison firing goes there with its reason
    assert "sqs:DeleteMessage" not in on_dlq


def test_runs_that_fail_or_die_and_lost_firings_raise_alarms(assembly: Assembly) -> None:
    alarms = {
        a["Properties"]["AlarmName"]: a["Properties"]
        for a in assembly.resources("scheduler", "AWS::CloudWatch::Alarm").values()
    }
    assert {
        "suite-dev-scheduler-run-failures",
        "suite-dev-scheduler-schedules-dlq",
        "suite-dev-scheduler-firings-dlq",
        "suite-dev-scheduler-below-desired",
    } <= set(alarms)
    assert all(alarm["AlarmActions"] for alarm in alarms.values())
    # The EMF line every finished run writes, and the one the next attempt writes for a run
    # whose process died (status "failed"): both count.
    [metric_filter] = assembly.resources("scheduler", "AWS::Logs::MetricFilter").values()
    pattern = metric_filter["Properties"]["FilterPattern"]
    assert "$.ScheduledRuns = 1" in pattern
    assert '$.status != "succeeded"' in pattern
    run_failures = alarms["suite-dev-scheduler-run-failures"]
    assert (
        run_failures["MetricName"]
        == metric_filter["Properties"]["MetricTransformations"][0]["MetricName"]
    )
    assert run_failures["Threshold"] == 1
