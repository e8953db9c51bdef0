"""The ECR conventions: names ECR accepts for every service, and rules that keep what runs."""

import re
from pathlib import Path

from suite_contract.ecr import LIFECYCLE_POLICY, repository_name
from suite_contract.spec import find_repository_root, load_specs

# ECR's repository name rule (CreateRepository's repositoryName pattern).
ECR_NAME = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")


def test_every_service_gets_a_repository_ecr_accepts() -> None:
    specs = load_specs(find_repository_root(Path(__file__).parent))
    names = {repository_name("suite", name) for name in specs}
    assert names == {f"suite/{name}" for name in specs}
    assert all(ECR_NAME.fullmatch(name) for name in names), names


def test_only_untagged_images_expire_by_age() -> None:
    """A deployment pins a digest: a tagged image expires only once 50 newer ones exist."""
    rules = LIFECYCLE_POLICY["rules"]
    assert len({rule["rulePriority"] for rule in rules}) == len(rules)
    for rule in rules:
        selection = rule["selection"]
        if selection["countType"] == "sinceImagePushed":
            assert selection["tagStatus"] == "untagged", rule
        else:
            assert selection["countType"] == "imageCountMoreThan", rule
            assert selection["countNumber"] >= 50, rule
