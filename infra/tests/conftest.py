"""Synthesize once per session: the repository's app, and a variant with a fourth service."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from suite_contract.spec import find_repository_root

if TYPE_CHECKING:
    from infra.testing import Assembly

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

ROOT = find_repository_root(Path(__file__).parent)

# A fourth service that exercises what the three real ones do not: EC2 Spot capacity, an
# internal load balancer of its own, ECS-native blue/green and scaling from zero.
REPORTS_SPEC = """
name = "reports"
command = ["reports"]
port = 8090
health_path = "/health"
exposure = "internal"

[task]
cpu = 512
memory = 1024
desired_count = 1

[trigger]
kind = "http"

[config]
parameters = ["shared", "reports"]
secrets = { DB_SECRET = "db" }

[scaling]
min_count = 0
max_count = 4
requests_per_task = 600

[[capacity]]
provider = "EC2_SPOT"
weight = 1

[deployment]
strategy = "blue_green"
controller = "ecs"
bake_minutes = 10
"""


# What `suite push --json | jq -c '.images | map_values(.digest)'` hands the deploy, for some of
# the services only: the others keep the imageTag.
IMAGE_DIGESTS = {"api": f"sha256:{'a' * 64}", "reports": f"sha256:{'0123456789abcdef' * 4}"}


GITHUB_REPOSITORY = "example-org/ecs-suite"


@pytest.fixture(scope="session")
def image_digests() -> dict[str, str]:
    return dict(IMAGE_DIGESTS)


@pytest.fixture(scope="session")
def assembly(tmp_path_factory: pytest.TempPathFactory) -> Assembly:
    # The CDK is imported by the fixtures that synthesize, not by this module: pytest loads this
    # conftest for every run whose test paths include infra/tests (make test-fast, which only
    # --ignores the folder, too), and importing the CDK costs each process 1.8 s and a node.
    from infra.testing import synthesize  # noqa: PLC0415

    return synthesize(tmp_path_factory.mktemp("cdk.out"), root=ROOT)


@pytest.fixture(scope="session")
def extended_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of services/' specs with other api [edge] figures, plus ``reports``."""
    root = tmp_path_factory.mktemp("repo")
    for spec in ROOT.glob("services/*/service.toml"):
        target = root / spec.relative_to(ROOT)
        target.parent.mkdir(parents=True)
        shutil.copy(spec, target)
    # Other edge figures, so the tests see them flow from the spec (a body limit WAF can read
    # whole, so the common rule set's 8 KB rule stays in force).
    api = root / "services/api/service.toml"
    api.write_text(
        api.read_text()
        .replace("max_body_bytes = 65536", "max_body_bytes = 4096")
        .replace("requests_per_caller = 1000", "requests_per_caller = 300")
        .replace("rate_window_seconds = 300", "rate_window_seconds = 60")
    )
    assert "max_body_bytes = 4096" in api.read_text(), "the api spec's [edge] moved"
    (root / "services/reports").mkdir()
    (root / "services/reports/service.toml").write_text(REPORTS_SPEC)
    return root


@pytest.fixture(scope="session")
def extended(tmp_path_factory: pytest.TempPathFactory, extended_root: Path) -> Assembly:
    """The app over ``extended_root``, with both cost switches flipped, the production switches
    Shield Advanced and ECR enhanced scanning on (as ``-c`` passes them: text), images pinned by
    digest (as ``-c imageDigests=...`` passes them: JSON text) and the delivery stack's roles."""
    from infra.testing import synthesize  # noqa: PLC0415

    return synthesize(
        tmp_path_factory.mktemp("cdk.out.extended"),
        root=extended_root,
        context={
            "natGateways": 0,
            "dbMultiAz": False,
            "shieldAdvanced": "true",
            "ecrEnhancedScanning": "true",
            "imageDigests": json.dumps(IMAGE_DIGESTS),
            # As `-c` passes them: the delivery stack's roles for this repository.
            "githubRepository": GITHUB_REPOSITORY,
            "deployEnvironments": "dev,prod",
        },
    )
