"""The CDK app: the registry (one per account and region), then the environment's network,
platform and one stack per service folder."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import App, Environment, Tags, Validations
from cdk_nag import AwsSolutionsChecks

from infra.config import EnvConfig
from infra.delivery import DeliveryStack
from infra.feature_flags import CDK_JSON
from infra.network import NetworkStack
from infra.platform import PlatformStack
from infra.registry import RegistryStack
from infra.service import ServiceStack
from suite_contract.spec import ServiceSpec, load_specs

__all__ = ["build_app"]


def build_app(
    *,
    root: Path | None = None,
    context: Mapping[str, Any] | None = None,
    outdir: str | None = None,
    nag: bool = True,
) -> App:
    """Every stack of one environment; ``root`` is the folder holding ``services/``.

    ``context`` adds to (and overrides) ``cdk.json``'s when the app is built outside the CDK
    CLI, as the tests do.
    """
    # The CLI passes cdk.json's context itself (and -c values over it); reading it here too
    # lets `python app.py` and the tests synthesize the same app without the CLI.
    base = json.loads(CDK_JSON.read_text()).get("context", {})
    if outdir is None and "CDK_OUTDIR" not in os.environ:
        outdir = str(CDK_JSON.parent / "cdk.out")  # `python app.py` writes where `cdk` would
    app = App(context=base | dict(context or {}), outdir=outdir)
    config = EnvConfig.from_context(app.node)
    specs = load_specs(root)
    build_stacks(app, config, specs)
    if nag:
        Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


def build_stacks(app: App, config: EnvConfig, specs: Mapping[str, ServiceSpec]) -> None:
    config.check_services(specs)
    environment = Environment(account=config.account, region=config.region)
    registry = RegistryStack(
        app,
        f"{config.app}-registry",
        app=config.app,
        services=specs,
        enhanced_scanning=config.ecr_enhanced_scanning,
        env=environment,
        description=f"{config.app}: the services' ECR repositories, shared by every environment",
    )
    if config.github_repository:
        DeliveryStack(
            app,
            f"{config.app}-delivery",
            app=config.app,
            repository=config.github_repository,
            environments=config.deploy_environments,
            oidc_provider_arn=config.github_oidc_provider_arn,
            cdk_qualifier=config.cdk_qualifier,
            env=environment,
            description=f"{config.app}: the roles GitHub Actions assumes (OIDC) to push and deploy",
        )
    network = NetworkStack(
        app,
        f"{config.prefix}-network",
        config=config,
        env=environment,
        description=f"{config.prefix}: VPC, endpoints, flow logs, the environment key",
    )
    platform = PlatformStack(
        app,
        f"{config.prefix}-platform",
        config=config,
        network=network,
        specs=specs,
        env=environment,
        description=f"{config.prefix}: cluster, capacity, load balancers, queues, database",
    )
    services = [
        ServiceStack(
            app,
            f"{config.prefix}-{name}",
            config=config,
            platform=platform,
            spec=spec,
            env=environment,
            description=f"{config.prefix}: the {name} service",
        )
        for name, spec in specs.items()
    ]
    for service in services:
        # Its image and the collector's come from the registry's repositories and cache rule.
        service.add_stack_dependency(registry)
    Tags.of(app).add("app", config.app)
    # Not the registry: every environment deploys it, and would retag it with its own name.
    for stack in (network, platform, *services):
        Tags.of(stack).add("env", config.env)
