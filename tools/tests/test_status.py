"""``suite status``: the deployed services read back from moto, as a child process."""

from __future__ import annotations

import json
import os
import time

import pytest

from servicekit import aws
from servicekit.testing.moto import MotoServer
from suite_tools.testing import DeployedSuite, moto_state, run_suite


@pytest.fixture
def suite(aws_env: MotoServer) -> DeployedSuite:
    # Tasks stay RUNNING however often they are described (moto advances them otherwise).
    moto_state("ecs::task", manual=True)
    return DeployedSuite()


def _emf(job: str, status: str) -> dict[str, object]:
    """The line the scheduling runtime writes per finished run."""
    return {
        "_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": []},
        "ScheduledRuns": 1,
        "ScheduledRunDuration": 0.25,
        "job": job,
        "status": status,
    }


def _healthy(suite: DeployedSuite) -> None:
    suite.run_worker_task("FARGATE")
    suite.run_worker_task("FARGATE_SPOT")
    aws.client("elbv2").register_targets(
        TargetGroupArn=suite.api.target_group,
        Targets=[{"Id": "10.0.1.5", "Port": 8000}, {"Id": "10.0.1.6", "Port": 8000}],
    )
    aws.client("sqs").send_message(QueueUrl=suite.queue, MessageBody='{"job_id": "j-1"}')
    aws.client("cloudwatch").put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": "ApproximateAgeOfOldestMessage",
                "Dimensions": [{"Name": "QueueName", "Value": "suite-dev-jobs"}],
                "Value": 42.0,
            }
        ],
    )
    suite.log("scheduler", _emf("outbox-sweep", "failed"))
    suite.log("scheduler", _emf("outbox-sweep", "succeeded"), "not json at all")


def test_a_healthy_environment_as_json_and_as_a_table(suite: DeployedSuite) -> None:
    _healthy(suite)

    run = run_suite("status", "--json")

    assert run.code == 0, run.stderr
    document = json.loads(run.stdout)
    assert document["healthy"] is True
    assert (document["app"], document["env"]) == ("suite", "dev")
    worker = document["services"]["worker"]
    assert worker["tasks"]["desired"] == 2
    assert worker["tasks"]["running"] == 2
    # moto ignores list_tasks' serviceName: the cluster's tasks are the worker's here.
    assert worker["tasks"]["byCapacityProvider"] == {
        "FARGATE": {"running": 1, "pending": 0},
        "FARGATE_SPOT": {"running": 1, "pending": 0},
    }
    assert worker["deployments"][0]["status"] == "PRIMARY"
    assert worker["deployments"][0]["taskDefinition"] == "suite-dev-worker:2"
    assert worker["queue"] == {
        "name": "suite-dev-jobs",
        "visible": 1,
        "inFlight": 0,
        "oldestAgeSeconds": 42.0,
        "deadLetters": 0,
    }
    api = document["services"]["api"]
    assert api["targets"] == [
        {"targetGroup": "suite-dev-api-blue", "states": {"healthy": 2}, "unhealthy": []}
    ]
    assert api["codedeploy"] == []
    jobs = {job["job"]: job for job in document["services"]["scheduler"]["jobs"]}
    assert jobs["outbox-sweep"]["lastRun"]["status"] == "succeeded"
    assert jobs["outbox-sweep"]["expression"] == "rate(1 minute)"
    assert jobs["outbox-sweep"]["next"] is not None
    assert jobs["purge-finished"]["lastRun"] is None
    assert jobs["purge-finished"]["next"].endswith("T03:00:00Z")

    table = run_suite("status")
    assert table.code == 0, table.stderr
    assert table.stdout.startswith("suite-dev: healthy\n")
    assert "worker (sqs): ok" in table.stdout
    assert "queue        suite-dev-jobs: 1 visible  0 in flight  oldest 42 s  dlq 0" in table.stdout
    assert "targets      suite-dev-api-blue: healthy 2" in table.stdout
    assert "FARGATE 1 running 0 pending, FARGATE_SPOT 1 running 0 pending" in table.stdout
    assert "job          outbox-sweep" in table.stdout


def test_something_unhealthy_is_named_and_exits_2(suite: DeployedSuite) -> None:
    _healthy(suite)
    cloudwatch = aws.client("cloudwatch")
    cloudwatch.put_metric_alarm(
        AlarmName="suite-dev-jobs-dlq-not-empty",
        MetricName="ApproximateNumberOfMessagesVisible",
        Namespace="AWS/SQS",
        Statistic="Maximum",
        Period=300,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    cloudwatch.set_alarm_state(
        AlarmName="suite-dev-jobs-dlq-not-empty", StateValue="ALARM", StateReason="1 message"
    )
    aws.client("sqs").send_message(QueueUrl=suite.dlq, MessageBody='{"job_id": "j-9"}')
    suite.log("scheduler", _emf("purge-finished", "timed_out"))
    # Scaled out to 4: two are not running yet.
    aws.client("ecs").update_service(cluster="suite-dev", service="api", desiredCount=4)
    aws.client("ecs").update_service(cluster="suite-dev", service="api", desiredCount=4)

    run = run_suite("status", "worker", "scheduler", "--json")

    assert run.code == 2, run.stderr
    document = json.loads(run.stdout)
    assert set(document["services"]) == {"worker", "scheduler"}
    assert document["healthy"] is False
    assert document["services"]["worker"]["problems"] == [
        "alarm suite-dev-jobs-dlq-not-empty",
        "1 dead letters in suite-dev-jobs-dlq",
    ]
    assert document["services"]["scheduler"]["problems"] == [
        "job purge-finished last run timed_out"
    ]
    table = run_suite("status", "worker", "scheduler")
    assert table.code == 2
    assert "worker (sqs): UNHEALTHY\n  ! alarm suite-dev-jobs-dlq-not-empty\n" in table.stdout
    assert "alarm        suite-dev-jobs-dlq-not-empty since " in table.stdout


def test_what_is_not_deployed_says_which_stack_deploys_it(aws_env: MotoServer) -> None:
    run = run_suite("status", "worker", "--env", "prod")
    assert run.code == 1
    assert run.stderr == (
        "suite status: no ECS cluster suite-prod: deploy the platform stack (cdk deploy "
        "suite-prod-platform), or check --app/--env\n"
    )
    aws.client("ecs").create_cluster(clusterName="suite-prod")
    run = run_suite("status", "worker", "--env", "prod")
    assert run.code == 1
    assert run.stderr == (
        "suite status: no ECS service worker in cluster suite-prod: deploy its stack "
        "(cdk deploy suite-prod-worker)\n"
    )


def test_an_unknown_service_is_one_line(aws_env: MotoServer) -> None:
    run = run_suite("status", "billing")
    assert run.code == 1
    assert run.stderr == (
        "suite status: unknown service billing (services/*/service.toml: api, scheduler, worker)\n"
    )


def test_no_credentials_is_one_line(aws_env: MotoServer) -> None:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    }
    run = run_suite("status", "worker", env=environment)
    assert run.code == 1
    assert run.stderr.startswith("suite status: no AWS credentials: set AWS_PROFILE")
    assert len(run.stderr.splitlines()) == 1


def test_local_without_a_compose_project_says_so(aws_env: MotoServer) -> None:
    environment = dict(os.environ, COMPOSE_PROJECT_NAME="daytwo-nothing-runs-here")
    run = run_suite("status", "--local", env=environment)
    assert run.code == 1
    assert run.stderr == (
        "suite status: no compose project daytwo-nothing-runs-here running here (make up; "
        "COMPOSE_PROJECT_NAME names another)\n"
    )
