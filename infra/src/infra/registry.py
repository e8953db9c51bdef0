"""The registry stack: what ECR holds for the whole account and region, not for one environment.

One repository ``{app}/{service}`` per service, shared by every environment, so an image is
promoted from one environment to the next by its digest and never rebuilt; and the pull-through
cache rule for ECR Public (one per registry: two environments could not each declare it).
``suite push`` creates a repository it finds missing with the same settings and the same names and
lifecycle rules (``suite_contract.ecr``): a repository it created first is adopted by deploying
this stack with ``--import-existing-resources``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_ecr as ecr
from constructs import Construct

from infra.names import pascal
from suite_contract.ecr import LIFECYCLE_POLICY, repository_name

__all__ = ["ECR_PUBLIC_PREFIX", "RegistryStack"]

# The pull-through cache prefix for ECR Public: sidecar images come through the account's own
# registry, so they pull over the ECR endpoints even when there is no NAT gateway.
ECR_PUBLIC_PREFIX = "ecr-public"


class RegistryStack(Stack):
    """Holds no environment's value: every environment's app synthesizes the same template."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        app: str,
        services: Iterable[str],
        enhanced_scanning: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id, **kwargs)
        for service in services:
            self._repository(service, repository_name(app, service))
        if enhanced_scanning:
            # Amazon Inspector scans the app's repositories on push and again whenever a new
            # vulnerability is published (basic scanning looks once, at push). One setting per
            # registry: set `ecrEnhancedScanning` alike in every environment's context.
            ecr.CfnRegistryScanningConfiguration(
                self,
                "EnhancedScanning",
                scan_type="ENHANCED",
                rules=[
                    ecr.CfnRegistryScanningConfiguration.ScanningRuleProperty(
                        scan_frequency="CONTINUOUS_SCAN",
                        repository_filters=[
                            ecr.CfnRegistryScanningConfiguration.RepositoryFilterProperty(
                                filter=f"{app}/*", filter_type="WILDCARD"
                            )
                        ],
                    )
                ],
            )
        ecr.CfnPullThroughCacheRule(
            self,
            "EcrPublicCache",
            ecr_repository_prefix=ECR_PUBLIC_PREFIX,
            upstream_registry_url="public.ecr.aws",
        )

    def _repository(self, service: str, name: str) -> None:
        repository = ecr.Repository(
            self,
            f"Repo{pascal(service)}",
            repository_name=name,
            image_scan_on_push=True,
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            # The AWS-managed key, as `suite push` creates it: an environment's key would lock
            # the other environments out of the images they are promoted to.
            encryption=ecr.RepositoryEncryption.KMS,
            # Images still running must outlive the stack; Retain also lets a deploy with
            # --import-existing-resources adopt a repository `suite push` created first.
            removal_policy=RemovalPolicy.RETAIN,
        )
        resource = repository.node.default_child
        assert isinstance(resource, ecr.CfnRepository)
        # The policy text `suite push` gives a repository it creates: one it created and this
        # stack adopted shows no drift.
        resource.lifecycle_policy = ecr.CfnRepository.LifecyclePolicyProperty(
            lifecycle_policy_text=json.dumps(LIFECYCLE_POLICY)
        )
