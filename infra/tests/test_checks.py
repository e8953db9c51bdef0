"""cdk-nag (AwsSolutions), CloudFormation's validation rules, cfn-lint and checkov: no finding
left unexplained, on the repository's app and on the variant with a fourth service."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_sqs as sqs
from cdk_nag import AwsSolutionsChecks

from infra.testing import Assembly

INFRA = Path(__file__).resolve().parents[1]
CHECKOV = INFRA / "scripts" / "checkov.sh"


def _findings(assembly: Assembly) -> list[str]:
    return [
        f"{report['pluginName']}: {violation['ruleName']} at {construct['constructPath']}"
        for report in assembly.report["pluginReports"]
        if report["conclusion"] != "success"
        for violation in report["violations"]
        for construct in violation["violatingConstructs"]
    ]


@pytest.mark.parametrize("variant", ["assembly", "extended"])
def test_cdk_nag_and_cloudformation_rules_find_nothing(
    variant: str, request: pytest.FixtureRequest
) -> None:
    assembly: Assembly = request.getfixturevalue(variant)
    assert _findings(assembly) == []


def test_cdk_nag_reports_what_it_finds(tmp_path: Path) -> None:
    """The plugin is wired as the app wires it: a clean report is not a silent plugin."""
    app = App(outdir=str(tmp_path))
    sqs.Queue(Stack(app, "Bare"), "Queue", encryption=sqs.QueueEncryption.UNENCRYPTED)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {
        violation["ruleName"]
        for plugin in report["pluginReports"]
        if plugin["pluginName"] == "AwsSolutions"
        for violation in plugin["violations"]
    }
    assert {"AwsSolutions-SQS2", "AwsSolutions-SQS3", "AwsSolutions-SQS4"} <= rules


@pytest.mark.parametrize("variant", ["assembly", "extended"])
def test_cfn_lint_is_clean(variant: str, request: pytest.FixtureRequest) -> None:
    assembly: Assembly = request.getfixturevalue(variant)
    templates = sorted(str(path) for path in assembly.outdir.glob("*.template.json"))
    result = subprocess.run(
        ["cfn-lint", "--config-file", str(INFRA / ".cfnlintrc.yaml"), "--", *templates],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("uvx") is None, reason="checkov runs through uvx (uv not found)")
def test_checkov_is_clean(assembly: Assembly, extended: Assembly) -> None:
    result = subprocess.run(
        ["bash", str(CHECKOV), str(assembly.outdir), str(extended.outdir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


def test_every_checkov_skip_says_why(assembly: Assembly, extended: Assembly) -> None:
    skips = [
        skip
        for variant in (assembly, extended)
        for template in variant.templates.values()
        for resource in template["Resources"].values()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert skips
    assert all(len(skip["comment"]) > 20 for skip in skips), json.dumps(skips, indent=1)
