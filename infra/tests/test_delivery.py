"""The delivery stack: GitHub's OIDC roles, for one repository, allowing what the jobs do."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from infra.delivery import WORKFLOW
from infra.testing import Assembly
from servicekit import aws
from servicekit.testing import MotoServer
from suite_tools.images import _ensure_repository, _refuse_taken_tags, _registry
from suite_tools.release import release
from suite_tools.testing import BlueGreenService

from .conftest import GITHUB_REPOSITORY, ROOT

STACK = "suite-delivery"
ISSUER = "token.actions.githubusercontent.com"
ACCOUNT_REGION = "123456789012-eu-west-1"


def _roles(assembly: Assembly) -> dict[str, dict[str, Any]]:
    resources = assembly.templates[STACK]["Resources"]
    return {
        resource["Properties"]["RoleName"]: resource
        for resource in resources.values()
        if resource["Type"] == "AWS::IAM::Role"
    }


def _statements(assembly: Assembly, role: str) -> list[dict[str, Any]]:
    resources = assembly.templates[STACK]["Resources"]
    [logical_id] = [
        key
        for key, value in resources.items()
        if value.get("Properties", {}).get("RoleName") == role
    ]
    return [
        statement
        for resource in resources.values()
        if resource["Type"] == "AWS::IAM::Policy"
        and resource["Properties"]["Roles"] == [{"Ref": logical_id}]
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]
    ]


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for statement in statements:
        actions = statement["Action"]
        found.update([actions] if isinstance(actions, str) else actions)
    return found


def test_no_repository_named_no_roles(assembly: Assembly) -> None:
    # A default repository would hand the account to whoever owns that name on GitHub.
    assert STACK not in assembly.templates


def test_each_role_trusts_exact_subjects_of_the_delivery_workflow_on_main(
    extended: Assembly,
) -> None:
    main = f"repo:{GITHUB_REPOSITORY}:ref:refs/heads/main"
    expected = {
        "suite-github-registry": [main],
        "suite-github-push": [main],
        # An environment's subject names no branch: the workflow pin below is what keeps a
        # branch's (or another workflow's) job in that environment out.
        "suite-github-deploy": [
            f"repo:{GITHUB_REPOSITORY}:environment:dev",
            f"repo:{GITHUB_REPOSITORY}:environment:prod",
        ],
    }
    assert (ROOT / WORKFLOW).is_file()
    workflow = f"{GITHUB_REPOSITORY}/.github/workflows/delivery.yml@refs/heads/main"
    roles = _roles(extended)
    assert sorted(roles) == sorted(expected)
    for name, role in roles.items():
        [statement] = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
        assert statement["Condition"] == {
            "StringEquals": {
                f"{ISSUER}:aud": "sts.amazonaws.com",
                f"{ISSUER}:sub": expected[name],
                f"{ISSUER}:job_workflow_ref": workflow,
            }
        }
    [provider] = [
        r
        for r in extended.templates[STACK]["Resources"].values()
        if r["Type"] == "AWS::IAM::OIDCProvider"
    ]
    assert provider["Properties"]["Url"] == f"https://{ISSUER}"
    outputs = extended.templates[STACK]["Outputs"]
    assert {"RegistryRoleArn", "PushRoleArn", "DeployRoleArn"} <= set(outputs)


def test_the_registry_role_deploys_the_registry_stack_and_nothing_else(
    extended: Assembly,
) -> None:
    statements = _statements(extended, "suite-github-registry")
    by_resource: dict[str, set[str]] = {}
    for statement in statements:
        by_resource.setdefault(statement["Resource"], set()).update(_actions([statement]))
    assert "suite-registry" in extended.templates  # the stack the ARN below names
    stack = "arn:aws:cloudformation:eu-west-1:123456789012:stack/suite-registry/*"
    bootstrap = f"arn:aws:iam::123456789012:role/cdk-hnb659fds-%s-{ACCOUNT_REGION}"
    # Nothing else: not the bootstrap deploy role (it deploys any stack), no ECR of its own.
    assert by_resource == {
        stack: by_resource[stack],
        bootstrap % "cfn-exec-role": {"iam:PassRole"},
        bootstrap % "file-publishing-role": {"sts:AssumeRole"},
        f"arn:aws:s3:::cdk-hnb659fds-assets-{ACCOUNT_REGION}/*": {"s3:GetObject"},
        "arn:aws:ssm:eu-west-1:123456789012:parameter/cdk-bootstrap/hnb659fds/version": {
            "ssm:GetParameter"
        },
    }
    assert {"cloudformation:CreateChangeSet", "cloudformation:ExecuteChangeSet"} <= by_resource[
        stack
    ]
    assert all(action.startswith("cloudformation:") for action in by_resource[stack])
    # The execution role goes to CloudFormation only, which acts on the one stack above.
    [pass_role] = [s for s in statements if s["Action"] == "iam:PassRole"]
    assert pass_role["Condition"] == {
        "StringEquals": {"iam:PassedToService": "cloudformation.amazonaws.com"}
    }


def test_the_push_role_pushes_to_the_apps_repositories_only(extended: Assembly) -> None:
    statements = _statements(extended, "suite-github-push")
    assert "ecr:CreateRepository" not in _actions(statements)
    scoped = [s for s in statements if s["Resource"] != "*"]
    assert {s["Resource"] for s in scoped} == {
        "arn:aws:ecr:eu-west-1:123456789012:repository/suite/*"
    }
    assert _actions([s for s in statements if s["Resource"] == "*"]) == {
        "ecr:GetAuthorizationToken"
    }


@pytest.fixture
def calls(aws_env: MotoServer) -> Iterator[set[str]]:
    """Every AWS operation made through servicekit's clients, as IAM actions."""
    made: set[str] = set()

    def record(model: Any, **_: Any) -> None:
        made.add(f"{model.service_model.signing_name}:{model.name}")

    clients = [aws.client("codedeploy"), aws.client("ecs"), aws.client("ecr")]
    for client in clients:
        client.meta.events.register("before-call", record)
    yield made
    for client in clients:
        client.meta.events.unregister("before-call", record)


def test_the_deploy_role_allows_every_call_suite_release_makes(
    extended: Assembly, calls: set[str]
) -> None:
    api = BlueGreenService("api")
    api.register(f"sha256:{'d' * 64}")
    calls.clear()  # the set-up's calls: cdk deploy's part
    release([], app="suite", env="dev", wait=False, root=ROOT, write=lambda _: None)
    assert api.deployments()
    assert {"codedeploy:CreateDeployment", "ecs:DescribeServices"} <= calls
    allowed = _actions(_statements(extended, "suite-github-deploy"))
    assert calls <= allowed, calls - allowed
    assert "sts:AssumeRole" in allowed  # the CDK bootstrap roles do the deploying


def test_the_push_role_allows_the_ecr_calls_suite_push_makes(
    extended: Assembly, calls: set[str]
) -> None:
    """The API calls before the layers go up (those are the registry protocol's: the role's
    layer and image actions are the ones ECR documents for a push)."""
    ecr = aws.client("ecr")
    ecr.create_repository(repositoryName="suite/api", imageTagMutability="IMMUTABLE")
    calls.clear()  # the registry stack's part
    _registry(ecr, None)
    assert _ensure_repository(ecr, "suite/api", lambda _: None)
    _refuse_taken_tags(ecr, "suite/api", ["0123abc"])
    assert calls == {"ecr:GetAuthorizationToken", "ecr:DescribeRepositories", "ecr:BatchGetImage"}
    assert calls <= _actions(_statements(extended, "suite-github-push"))
