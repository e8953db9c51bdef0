"""``suite release``: CodeDeploy deployments of the blue/green services, against moto.

The command runs as a child process, as CI runs it; moto is in this process, so a test can play
CodeDeploy's part (finish a deployment) while the command follows it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from servicekit.testing import wait_until
from servicekit.testing.moto import MotoServer
from suite_tools.release import appspec
from suite_tools.testing import BlueGreenService, run_suite

DIGEST = f"sha256:{'b' * 64}"


@pytest.fixture
def api(aws_env: MotoServer) -> BlueGreenService:
    """The api as the infra leaves it, with the stack's new revision registered by cdk deploy."""
    return BlueGreenService("api")


class Following:
    """``suite release`` running in the background, to be finished and read."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "suite_tools", "release", "--poll", "0.05", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )

    def result(self) -> tuple[int, str, str]:
        stdout, stderr = self.process.communicate(timeout=60)
        return self.process.returncode, stdout, stderr


@pytest.fixture
def following() -> Iterator[list[Following]]:
    started: list[Following] = []
    yield started
    for run in started:
        if run.process.poll() is None:
            run.process.kill()
            run.process.communicate()


def _started(api: BlueGreenService) -> dict[str, Any]:
    found = wait_until(api.deployments, timeout=30, what="the deployment to be created")
    assert len(found) == 1
    return found[0]


def test_deploys_the_latest_revision_and_follows_it_to_success(
    api: BlueGreenService, following: list[Following]
) -> None:
    previous = api.running()
    target = api.register(DIGEST)
    run = Following("--json")
    following.append(run)

    deployment = _started(api)
    content = deployment["revision"]["appSpecContent"]["content"]
    assert deployment["revision"]["appSpecContent"]["sha256"] == (
        hashlib.sha256(content.encode()).hexdigest()
    )
    properties = api.appspec(deployment)["Resources"][0]["TargetService"]["Properties"]
    assert properties == {
        "TaskDefinition": target,
        "LoadBalancerInfo": {"ContainerName": "app", "ContainerPort": 8000},
        "PlatformVersion": "LATEST",
        "NetworkConfiguration": {
            "AwsvpcConfiguration": {
                "Subnets": [api.subnet],
                "SecurityGroups": [api.security_group],
                "AssignPublicIp": "DISABLED",
            }
        },
    }
    assert run.process.poll() is None, "returned before the deployment finished"

    api.finish(deployment["deploymentId"], "Succeeded")
    code, stdout, stderr = run.result()
    assert code == 0, stderr
    assert json.loads(stdout)["releases"] == {
        "api": {
            "deploymentGroup": "suite-dev-api",
            "taskDefinition": target,
            "previousTaskDefinition": previous,
            "deploymentId": deployment["deploymentId"],
            "status": "Succeeded",
            "failure": None,
        }
    }
    assert f"{deployment['deploymentId']} Succeeded" in stderr
    assert api.running() == target

    again = run_suite("release")
    assert again.code == 0, again.stderr
    assert "already runs suite-dev-api:2; nothing to release" in again.stderr
    assert len(api.deployments()) == 1


def test_a_failed_deployment_exits_1_naming_it(
    api: BlueGreenService, following: list[Following]
) -> None:
    previous = api.running()
    api.register(DIGEST)
    run = Following()
    following.append(run)
    deployment = _started(api)

    api.finish(deployment["deploymentId"], "Failed")
    code, _, stderr = run.result()
    assert code == 1
    assert stderr.splitlines()[-1] == (
        f"suite release: api: deployment {deployment['deploymentId']} Failed"
    )
    assert api.running() == previous


def test_a_second_run_follows_the_deployment_under_way(api: BlueGreenService) -> None:
    api.register(DIGEST)
    first = run_suite("release", "--no-wait")
    assert first.code == 0, first.stderr
    (deployment,) = api.deployments()
    assert first.stdout.split() == [
        "api",
        api.appspec(deployment)["Resources"][0]["TargetService"]["Properties"]["TaskDefinition"],
        deployment["deploymentId"],
        "Created",
    ]

    # The traffic has moved but the old task set still bakes: not "already runs".
    api.shift(deployment["deploymentId"])
    second = run_suite("release", "--no-wait")
    assert second.code == 0, second.stderr
    assert f"following {deployment['deploymentId']}, already under way" in second.stderr
    assert len(api.deployments()) == 1


def test_a_deployment_of_another_revision_under_way_is_not_overtaken(
    api: BlueGreenService,
) -> None:
    api.register(DIGEST)
    assert run_suite("release", "--no-wait").code == 0
    (deployment,) = api.deployments()
    api.register(f"sha256:{'c' * 64}")

    refused = run_suite("release")
    assert refused.code == 1
    assert f"deployment {deployment['deploymentId']} of suite-dev-api is under way with " in (
        refused.stderr
    )
    assert "aws deploy stop-deployment" in refused.stderr
    assert len(api.deployments()) == 1


def test_gives_up_following_at_the_deadline(api: BlueGreenService) -> None:
    api.register(DIGEST)
    late = run_suite("release", "--timeout", "1", "--poll", "0.1")
    assert late.code == 1
    (deployment,) = api.deployments()
    assert f"still under way after 1 s: api ({deployment['deploymentId']} Created)" in late.stderr


def test_a_missing_deployment_group_says_to_deploy_the_stack(aws_env: MotoServer) -> None:
    missing = run_suite("release", "api")
    assert missing.code == 1
    assert missing.stderr.strip() == (
        "suite release: no CodeDeploy deployment group suite-dev-api/suite-dev-api: deploy the "
        "service's stack first (cdk deploy suite-dev-api)"
    )


def test_a_service_cloudformation_deploys_is_refused(aws_env: MotoServer) -> None:
    refused = run_suite("release", "worker")
    assert refused.code == 1
    assert refused.stderr.strip() == (
        "suite release: worker: not deployed by CodeDeploy (services/*/service.toml "
        "[deployment]); `cdk deploy` releases it"
    )


def test_no_credentials_is_one_line(aws_env: MotoServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ACCESS")}
    env.pop("AWS_SECRET_ACCESS_KEY", None)
    env.pop("AWS_SESSION_TOKEN", None)
    done = run_suite("release", env=env)
    assert done.code == 1
    assert done.stderr.startswith("suite release: no AWS credentials:")
    assert "Traceback" not in done.stderr


def test_the_appspec_keeps_the_services_capacity_and_omits_what_it_lacks() -> None:
    # moto's DescribeServices drops capacityProviderStrategy: this shape is ECS's own.
    service = {
        "serviceName": "reports",
        "loadBalancers": [{"containerName": "app", "containerPort": 8090}],
        "capacityProviderStrategy": [
            {"capacityProvider": "suite-dev-ec2-spot", "weight": 3, "base": 1},
            {"capacityProvider": "suite-dev-ec2", "weight": 1},
        ],
    }
    document = json.loads(appspec(service, "arn:aws:ecs:eu-west-1:1:task-definition/x:9"))
    assert document["version"] == 0.0
    properties = document["Resources"][0]["TargetService"]["Properties"]
    assert properties == {
        "TaskDefinition": "arn:aws:ecs:eu-west-1:1:task-definition/x:9",
        "LoadBalancerInfo": {"ContainerName": "app", "ContainerPort": 8090},
        "CapacityProviderStrategy": [
            {"CapacityProvider": "suite-dev-ec2-spot", "Weight": 3, "Base": 1},
            {"CapacityProvider": "suite-dev-ec2", "Weight": 1, "Base": 0},
        ],
    }
