"""Synthesis for the tests: templates by stack and the validation report, plus lookups."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aws_cdk.assertions import Template

from infra.app import build_app

__all__ = ["PREFIX", "REGISTRY", "Assembly", "container", "policy_statements", "synthesize"]

PREFIX = "suite-dev"
REGISTRY = "suite-registry"


@dataclass
class Assembly:
    """A synthesized app: its templates by stack name and the validation report."""

    outdir: Path
    report: dict[str, Any]
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _template(self, stack: str) -> dict[str, Any]:
        """``stack``: an environment's stack without ``{PREFIX}-``, or ``REGISTRY``."""
        return self.templates[stack if stack == REGISTRY else f"{PREFIX}-{stack}"]

    def template(self, stack: str) -> Template:
        return Template.from_json(self._template(stack))

    def resources(self, stack: str, kind: str) -> dict[str, dict[str, Any]]:
        return {
            key: value
            for key, value in self._template(stack)["Resources"].items()
            if value["Type"] == kind
        }


def synthesize(outdir: Path, *, root: Path, context: dict[str, Any] | None = None) -> Assembly:
    app = build_app(root=root, context=context, outdir=str(outdir))
    try:
        app.synth()
    except RuntimeError as error:
        # A policy-validation failure (cdk-nag, CloudFormation rules) stops synth() after the
        # templates are written; the checks' tests report the findings from the report.
        if "ValidationFailed" not in str(error):
            raise
    report = json.loads((outdir / "validation-report.json").read_text())
    assembly = Assembly(outdir=outdir, report=report)
    for path in sorted(outdir.glob("*.template.json")):
        assembly.templates[path.name.removesuffix(".template.json")] = json.loads(path.read_text())
    return assembly


def container(assembly: Assembly, stack: str, name: str) -> dict[str, Any]:
    """One container definition of the stack's task definition."""
    [task] = assembly.resources(stack, "AWS::ECS::TaskDefinition").values()
    found: list[dict[str, Any]] = [
        c for c in task["Properties"]["ContainerDefinitions"] if c["Name"] == name
    ]
    [definition] = found
    return definition


def policy_statements(assembly: Assembly, stack: str, role: str) -> list[dict[str, Any]]:
    """Every statement of the policies attached to the stack's role ``role`` (by logical id)."""
    statements = []
    for policy in assembly.resources(stack, "AWS::IAM::Policy").values():
        roles = policy["Properties"].get("Roles", [])
        if any(r.get("Ref", "").startswith(role) for r in roles):
            statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements
