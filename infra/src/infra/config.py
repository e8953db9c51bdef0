"""The deployment's environment, read from CDK context (``cdk.json`` or ``-c key=value``)."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from aws_cdk import aws_logs as logs
from constructs import Node

from infra.images import OTEL_COLLECTOR_IMAGE

__all__ = ["EnvConfig"]

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_REPOSITORY = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}")
_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
}


class ContextError(ValueError):
    """A context value is missing or invalid; the message names the key."""


@dataclass(frozen=True)
class EnvConfig:
    """One environment (account, region, names, network cost switch, sizes)."""

    account: str
    region: str
    app: str
    env: str
    domain: str
    certificate_arn: str
    hosted_zone_id: str | None = None
    max_azs: int = 2
    nat_gateways: int = 1
    image_tag: str = "bootstrap"
    image_digests: Mapping[str, str] = field(default_factory=dict)
    log_retention_days: int = 30
    db_instance_type: str = "t4g.large"
    db_multi_az: bool = True
    db_max_connections: int | None = None
    ec2_instance_types: tuple[str, ...] = ("m7i.large", "m6i.large", "m7a.large")
    ec2_max_instances: int = 4
    otel_collector_image: str = OTEL_COLLECTOR_IMAGE
    alarm_email: str | None = None
    ecs_exec: bool = True
    shield_advanced: bool = False
    ecr_enhanced_scanning: bool = False
    github_repository: str | None = None
    github_oidc_provider_arn: str | None = None
    deploy_environments: tuple[str, ...] = ()
    cdk_qualifier: str = "hnb659fds"

    @property
    def prefix(self) -> str:
        """``{app}-{env}``: stack names and resource name prefixes."""
        return f"{self.app}-{self.env}"

    @property
    def endpoints_only(self) -> bool:
        """No NAT gateway: tasks reach AWS through VPC endpoints only (the cost switch)."""
        return self.nat_gateways == 0

    @property
    def log_retention(self) -> logs.RetentionDays:
        return _RETENTION[self.log_retention_days]

    def parameter_path(self, scope: str) -> str:
        """``/{app}/{env}/{scope}``: where servicekit reads settings and flags."""
        return f"/{self.app}/{self.env}/{scope}"

    def image_tag_or_digest(self, service: str) -> str:
        """The service's pinned digest (``imageDigests``), else ``imageTag``."""
        return self.image_digests.get(service, self.image_tag)

    def secret_name(self, name: str) -> str:
        """``{app}/{env}/{name}``: the Secrets Manager naming of ARCHITECTURE.md."""
        return f"{self.app}/{self.env}/{name}"

    def check_services(self, services: Collection[str]) -> None:
        """A digest for a service without a folder is a typo or a stale list: refuse it."""
        unknown = sorted(set(self.image_digests) - set(services))
        if unknown:
            raise ContextError(
                f"imageDigests names no service folder services/<name>/: {', '.join(unknown)} "
                f"(services: {', '.join(services) or 'none'})"
            )

    @classmethod
    def from_context(cls, node: Node) -> EnvConfig:
        """Read every key; a missing required key or a bad value names the key."""

        def get(key: str, default: Any = None, *, required: bool = False) -> Any:
            value = node.try_get_context(key)
            if value is None:
                if required:
                    raise ContextError(f"context {key!r} is required (cdk.json or -c {key}=...)")
                return default
            return value

        config = cls(
            account=str(get("account", required=True)),
            region=str(get("region", required=True)),
            app=str(get("appName", required=True)),
            env=str(get("envName", required=True)),
            domain=str(get("domain", required=True)),
            certificate_arn=str(get("certificateArn", required=True)),
            hosted_zone_id=get("hostedZoneId"),
            max_azs=int(get("maxAzs", 2)),
            nat_gateways=int(get("natGateways", 1)),
            image_tag=str(get("imageTag", "bootstrap")),
            image_digests=_image_digests(get("imageDigests")),
            log_retention_days=int(get("logRetentionDays", 30)),
            db_instance_type=str(get("dbInstanceType", cls.db_instance_type)),
            db_multi_az=_boolean(get("dbMultiAz", True)),
            db_max_connections=(
                None if get("dbMaxConnections") is None else int(get("dbMaxConnections"))
            ),
            ec2_instance_types=tuple(get("ec2InstanceTypes", cls.ec2_instance_types)),
            ec2_max_instances=int(get("ec2MaxInstances", 4)),
            otel_collector_image=str(get("otelCollectorImage", cls.otel_collector_image)),
            alarm_email=get("alarmEmail"),
            ecs_exec=_boolean(get("ecsExec", True)),
            shield_advanced=_boolean(get("shieldAdvanced", False)),
            ecr_enhanced_scanning=_boolean(get("ecrEnhancedScanning", False)),
            github_repository=get("githubRepository"),
            github_oidc_provider_arn=get("githubOidcProviderArn"),
            deploy_environments=_names(get("deployEnvironments", [get("envName")])),
            cdk_qualifier=str(get("cdkQualifier", "hnb659fds")),
        )
        config.validate()
        return config

    def validate(self) -> None:
        problems = []
        if not re.fullmatch(r"[0-9]{12}", self.account):
            problems.append(f"account {self.account!r} is not a 12-digit account id")
        for key, value in (("appName", self.app), ("envName", self.env)):
            if not _NAME.fullmatch(value):
                problems.append(f"{key} {value!r}: lower-case letters, digits, '-', 1-16 chars")
        if self.max_azs < 2:
            problems.append(f"maxAzs {self.max_azs}: tasks need at least two AZs")
        if not 0 <= self.nat_gateways <= self.max_azs:
            problems.append(f"natGateways {self.nat_gateways}: 0 (VPC endpoints) to maxAzs")
        if self.log_retention_days not in _RETENTION:
            problems.append(
                f"logRetentionDays {self.log_retention_days}: one of {sorted(_RETENTION)}"
            )
        if self.db_max_connections is not None and self.db_max_connections < 1:
            problems.append(f"dbMaxConnections {self.db_max_connections}: a positive number")
        if not self.certificate_arn.startswith("arn:"):
            problems.append(f"certificateArn {self.certificate_arn!r} is not an ARN")
        problems.extend(
            f"imageDigests: {service}'s {digest!r} is not an image digest (sha256:<64 hex digits>)"
            for service, digest in self.image_digests.items()
            if not _DIGEST.fullmatch(digest)
        )
        if self.github_repository is not None and not _REPOSITORY.fullmatch(self.github_repository):
            problems.append(f"githubRepository {self.github_repository!r} is not OWNER/NAME")
        if problems:
            raise ContextError("; ".join(problems))


def _boolean(value: object) -> bool:
    # `-c dbMultiAz=false` arrives as the string "false".
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes"}
    return bool(value)


def _names(value: object) -> tuple[str, ...]:
    # `-c deployEnvironments=dev,prod` arrives as one string; cdk.json may hold a list.
    if isinstance(value, str):
        return tuple(name.strip() for name in value.split(",") if name.strip())
    if isinstance(value, list | tuple):
        return tuple(str(name) for name in value)
    raise ContextError(f"deployEnvironments must be a list of names, not {type(value).__name__}")


def _image_digests(value: object) -> dict[str, str]:
    """``{service: "sha256:..."}`` from an object (cdk.json) or its JSON text (``-c``)."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ContextError(
                f'imageDigests is not JSON ({error.msg}): {{"<service>": "sha256:...", ...}}'
            ) from error
    if not isinstance(value, Mapping):
        raise ContextError(
            f"imageDigests must map service names to digests, not {type(value).__name__}"
        )
    # str() keeps a non-string value for validate() to name with its service.
    return {str(service): str(digest) for service, digest in value.items()}
