"""Written exceptions to the checks: each cdk-nag or checkov finding not fixed says why here."""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnResource, Stack, Validations
from constructs import IConstruct

__all__ = ["SSE_SQS", "acknowledge_nag", "acknowledge_wildcard", "skip_checkov"]

SSE_SQS = (
    "encrypted at rest with SQS-managed keys (SSE-SQS); checkov recognises only a KMS key, "
    "which would add key grants to every producer and consumer for no added control"
)


def acknowledge_nag(scope: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding (``AwsSolutions-IAM5[Resource::*]``) on ``scope``."""
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))


def acknowledge_wildcard(scope: IConstruct, resource: str, reason: str) -> None:
    """Acknowledge IAM5 for one wildcard resource ARN, named as cdk-nag prints it."""
    resolved = Stack.of(scope).resolve(resource)
    if not isinstance(resolved, str):
        raise TypeError(f"{resource!r} does not resolve to a literal ARN")
    acknowledge_nag(scope, f"AwsSolutions-IAM5[Resource::{resolved}]", reason)


def skip_checkov(scope: IConstruct, check: str, reason: str) -> None:
    """Mark ``scope``'s CloudFormation resource so checkov skips ``check``, with the reason."""
    resource = scope if isinstance(scope, CfnResource) else scope.node.default_child
    if not isinstance(resource, CfnResource):
        raise TypeError(f"{scope.node.path} has no CloudFormation resource to annotate")
    metadata = resource.get_metadata("checkov") or {"skip": []}
    metadata["skip"].append({"id": check, "comment": reason})
    resource.add_metadata("checkov", metadata)
