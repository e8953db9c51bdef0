"""The delivery workflow: shellcheck on its scripts, and the rules it must keep (actionlint runs
in `make lint`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from suite_contract.spec import find_repository_root

ROOT = find_repository_root(Path(__file__).parent)
WORKFLOW = ROOT / ".github" / "workflows" / "delivery.yml"
TEXT = WORKFLOW.read_text()
JOBS: dict[str, Any] = yaml.safe_load(TEXT)["jobs"]


def _scripts() -> list[tuple[str, str]]:
    return [
        (f"{name}: {step.get('name', step['run'].splitlines()[0])}", step["run"])
        for name, job in JOBS.items()
        for step in job["steps"]
        if "run" in step
    ]


@pytest.mark.parametrize(("step", "script"), _scripts())
def test_run_scripts_pass_shellcheck(step: str, script: str, tmp_path: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck missing (tools/tests/setup.sh installs it)")
    # As actionlint does: ${{ }} expressions become placeholders of the same length.
    body = re.sub(r"\$\{\{.*?\}\}", lambda m: "_" * len(m.group()), script)
    path = tmp_path / "step.sh"
    path.write_text(f"#!/bin/bash\nset -eo pipefail\n{body}")
    done = subprocess.run(
        [shellcheck, "--norc", "-s", "bash", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{step}:\n{done.stdout}"


def test_actions_are_pinned_by_commit() -> None:
    uses = re.findall(r"uses:\s*(\S+)(.*)", TEXT)
    assert uses
    for action, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", action), action
        assert re.search(r"# v\d", comment), f"{action}: say which tag the SHA is"


def test_only_the_main_branch_jobs_may_assume_an_aws_role() -> None:
    assert yaml.safe_load(TEXT)["permissions"] == {"contents": "read"}
    with_token = {
        name for name, job in JOBS.items() if job.get("permissions", {}).get("id-token") == "write"
    }
    assert with_token == {"registry", "push", "deploy"}
    assert "refs/heads/main" in JOBS["push"]["if"]
    assert JOBS["deploy"]["needs"] == "push"
    # No long-lived keys: roles come from OIDC only.
    for forbidden in ("aws-access-key-id", "aws-secret-access-key", "secrets.AWS"):
        assert forbidden not in TEXT


def test_deploy_pins_the_digests_the_push_printed() -> None:
    push = "\n".join(step.get("run", "") for step in JOBS["push"]["steps"])
    assert "suite push --json" in push
    assert JOBS["push"]["outputs"]["digests"] == "${{ steps.push.outputs.digests }}"
    assert JOBS["deploy"]["env"]["IMAGE_DIGESTS"] == "${{ needs.push.outputs.digests }}"
    deploy = "\n".join(step.get("run", "") for step in JOBS["deploy"]["steps"])
    assert '--context "imageDigests=${IMAGE_DIGESTS}"' in deploy


def test_deploy_releases_the_codedeploy_services_after_the_stacks() -> None:
    runs = [step.get("run", "") for step in JOBS["deploy"]["steps"]]
    deploy = next(i for i, run in enumerate(runs) if "deploy --all" in run)
    release = next(i for i, run in enumerate(runs) if "suite release" in run)
    assert deploy < release
    assert JOBS["deploy"]["env"]["APP_ENV"] == "dev" == JOBS["deploy"]["environment"]


def _dockerfile_arg(name: str) -> str:
    """An ARG's default in the root Dockerfile, its continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", "")
    [value] = re.findall(rf"^ARG {name}=(.*)$", text, flags=re.MULTILINE)
    return value.strip('"')


def test_the_base_image_default_is_pinned_by_digest() -> None:
    image = _dockerfile_arg("PYTHON_IMAGE")
    # name:tag for the reader, the index digest for the engine: a rebuilt tag changes nothing.
    assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", image), image
    assert JOBS["test"]["env"]["SUITE_TEST_BASE_IMAGE"] == image


def test_uv_is_pinned_by_version_and_wheel_hashes() -> None:
    assert _dockerfile_arg("UV_VERSION") == yaml.safe_load(TEXT)["env"]["UV_VERSION"]
    hashes = _dockerfile_arg("UV_HASHES").split()
    assert len(hashes) >= 2  # x86_64 and aarch64
    for option in hashes:
        assert re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", option), option
    assert "--require-hashes" in (ROOT / "Dockerfile").read_text()


def test_every_image_build_carries_the_pinned_ca_bundle() -> None:
    env = yaml.safe_load(TEXT)["env"]
    assert env["DB_CA_BUNDLE_URL"].startswith("https://")
    assert re.fullmatch(r"[0-9a-f]{64}", env["DB_CA_BUNDLE_SHA256"])
    builds = [
        step["run"]
        for job in JOBS.values()
        for step in job["steps"]
        if re.search(r"suite (build|push)", step.get("run", ""))
    ]
    assert len(builds) == 2
    for run in builds:
        assert '"DB_CA_BUNDLE_URL=${DB_CA_BUNDLE_URL}"' in run
        assert '"DB_CA_BUNDLE_SHA256=${DB_CA_BUNDLE_SHA256}"' in run


def test_the_cdk_cli_comes_from_the_lockfile() -> None:
    lock = json.loads((ROOT / "infra" / "package-lock.json").read_text())
    cli = lock["packages"]["node_modules/aws-cdk"]
    assert cli["integrity"].startswith("sha512-")
    assert lock["packages"][""]["devDependencies"]["aws-cdk"] == cli["version"]
    assert "npx --yes" not in TEXT
    for name in ("registry", "deploy"):
        run = "\n".join(step.get("run", "") for step in JOBS[name]["steps"])
        assert "npm ci" in run
        assert "npx --no-install cdk deploy" in run


def test_the_registry_job_has_a_role_of_its_own() -> None:
    roles = {
        name: step["with"]["role-to-assume"]
        for name, job in JOBS.items()
        for step in job["steps"]
        if "configure-aws-credentials" in step.get("uses", "")
    }
    assert roles == {
        "registry": "${{ vars.AWS_REGISTRY_ROLE_ARN }}",
        "push": "${{ vars.AWS_PUSH_ROLE_ARN }}",
        "deploy": "${{ vars.AWS_DEPLOY_ROLE_ARN }}",
    }
