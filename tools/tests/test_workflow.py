"""The delivery workflow: shellcheck on its scripts, and the rules it must keep (actionlint runs
in `make lint`)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from servicekit.spec import find_repository_root

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
