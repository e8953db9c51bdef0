"""The registry stack: one repository per service for every environment, as `suite push` makes
them; and the services' images pinned by digest."""

from __future__ import annotations

import json
from typing import Any

from infra.testing import REGISTRY, Assembly, container, policy_statements
from servicekit import aws
from servicekit.testing import MotoServer
from suite_contract.ecr import LIFECYCLE_POLICY
from suite_tools.images import _ensure_repository

SERVICES = ("api", "scheduler", "worker")


def _repositories(assembly: Assembly) -> dict[str, dict[str, Any]]:
    return {
        repository["Properties"]["RepositoryName"]: repository
        for repository in assembly.resources(REGISTRY, "AWS::ECR::Repository").values()
    }


def test_one_repository_per_service_shared_by_the_environments(assembly: Assembly) -> None:
    repositories = _repositories(assembly)
    assert sorted(repositories) == [f"suite/{name}" for name in SERVICES]
    for name, repository in repositories.items():
        props = repository["Properties"]
        assert repository["DeletionPolicy"] == "Retain", name
        assert props["ImageScanningConfiguration"] == {"ScanOnPush": True}
        assert props["ImageTagMutability"] == "IMMUTABLE"
        assert props["EncryptionConfiguration"] == {"EncryptionType": "KMS"}
        # Every environment deploys this stack: an env tag would flip with each of them.
        assert props["Tags"] == [{"Key": "app", "Value": "suite"}]
    assembly.template(REGISTRY).resource_count_is("AWS::ECR::PullThroughCacheRule", 1)
    for name, template in assembly.templates.items():
        kinds = {resource["Type"] for resource in template["Resources"].values()}
        assert name == REGISTRY or not {t for t in kinds if t.startswith("AWS::ECR::")}, name


def test_the_lifecycle_rules_are_the_contracts(assembly: Assembly) -> None:
    for repository in _repositories(assembly).values():
        text = repository["Properties"]["LifecyclePolicy"]["LifecyclePolicyText"]
        assert json.loads(text) == LIFECYCLE_POLICY


def test_a_repository_suite_push_created_is_what_the_stack_declares(
    assembly: Assembly, aws_env: MotoServer
) -> None:
    """So adopting it (--import-existing-resources) imports no drift."""
    ecr = aws.client("ecr")
    _ensure_repository(ecr, "suite/api", lambda line: None)
    [created] = ecr.describe_repositories(repositoryNames=["suite/api"])["repositories"]
    policy = ecr.get_lifecycle_policy(repositoryName="suite/api")["lifecyclePolicyText"]
    declared = _repositories(assembly)["suite/api"]["Properties"]
    assert created["imageScanningConfiguration"]["scanOnPush"] is True
    assert declared["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert created["imageTagMutability"] == declared["ImageTagMutability"]
    assert created["encryptionConfiguration"]["encryptionType"] == "KMS"
    assert "KmsKey" not in declared["EncryptionConfiguration"]  # both the AWS-managed key
    assert json.loads(policy) == json.loads(declared["LifecyclePolicy"]["LifecyclePolicyText"])


def test_services_depend_on_the_registry(assembly: Assembly) -> None:
    manifest = json.loads((assembly.outdir / "manifest.json").read_text())
    for service in SERVICES:
        assert REGISTRY in manifest["artifacts"][f"suite-dev-{service}"]["dependencies"]
    for stack in ("network", "platform"):
        assert REGISTRY not in manifest["artifacts"][f"suite-dev-{stack}"].get("dependencies", [])


def _image(assembly: Assembly, service: str) -> str:
    [prefix, suffix] = container(assembly, service, "app")["Image"]["Fn::Join"][1][::2]
    assert prefix == "123456789012.dkr.ecr.eu-west-1."
    return str(suffix)


def test_images_are_pinned_by_digest_else_by_tag(
    extended: Assembly, image_digests: dict[str, str]
) -> None:
    assert _image(extended, "api") == f"/suite/api@{image_digests['api']}"
    assert _image(extended, "reports") == f"/suite/reports@{image_digests['reports']}"
    # No digest given: the imageTag.
    assert _image(extended, "worker") == "/suite/worker:bootstrap"


def test_a_service_left_out_of_the_digests_is_warned_about(extended: Assembly) -> None:
    """A partial map moves the other services back to the imageTag: synthesis says so."""
    warned = {
        construct["constructPath"]
        for report in extended.report["pluginReports"]
        for violation in report["violations"]
        if violation["ruleName"] == "Annotation::infra:imageTagFallback"
        for construct in violation["violatingConstructs"]
    }
    assert warned == {"suite-dev-worker", "suite-dev-scheduler"}


def test_without_digests_every_image_is_the_tag(assembly: Assembly) -> None:
    for service in SERVICES:
        assert _image(assembly, service) == f"/suite/{service}:bootstrap"


def test_the_execution_role_pulls_from_its_own_repository(extended: Assembly) -> None:
    pulls = [
        statement
        for statement in policy_statements(extended, "reports", "ExecutionRole")
        if "ecr:BatchGetImage" in statement["Action"] and statement.get("Sid") is None
    ]
    assert [statement["Resource"] for statement in pulls] == [
        "arn:aws:ecr:eu-west-1:123456789012:repository/suite/reports"
    ]
