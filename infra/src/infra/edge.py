"""The edge: what a request meets before a task. On the platform, one load balancer per exposed
service (its address outlives the service's stack), the access-log bucket, and for an
internet-facing one its WAF web ACL (logged, alarmed) and optional Shield Advanced protection;
in the service's stack, the listener rules that refuse private paths and check tokens, and the
DNS name."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aws_cdk import Annotations, ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_route53_targets as route53_targets
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_shield as shield
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from infra.alarms import AlarmTopic
from infra.checks import acknowledge_nag, skip_checkov
from infra.config import EnvConfig
from infra.identity import Auth
from infra.names import pascal
from infra.network import HTTPS_PORT, NetworkStack
from suite_contract.spec import EdgeSpec, Exposure, ServiceSpec

__all__ = [
    "Edge",
    "ListenerRules",
    "LoadBalancer",
    "alias_record",
    "greater_than_pattern",
    "waf_blocked",
]

# AWS WAF inspects at most this much of a request body behind an ALB (a fixed limit there).
WAF_BODY_INSPECTION_BYTES = 8 * 1024
# External listener rule priorities: refusals first, then token checks, then (ECS-native
# blue/green) the production rule ECS moves between the colours.
PRIVATE_PATHS_PRIORITY = 1
TOKEN_PATHS_PRIORITY = 20
# An ALB rule condition takes at most five values.
_VALUES_PER_CONDITION = 5


@dataclass(frozen=True)
class LoadBalancer:
    """A service's load balancer; its stack adds the listener (blue/green swaps its target)."""

    alb: elbv2.ApplicationLoadBalancer
    security_group: ec2.SecurityGroup
    external: bool
    port: int
    """The listener's: 443 when external, else the service's own port."""


class Edge:
    """The load balancers of the ``exposed`` services, by name, and what guards them."""

    def __init__(
        self,
        scope: Construct,
        *,
        config: EnvConfig,
        network: NetworkStack,
        exposed: Mapping[str, ServiceSpec],
        alarms: AlarmTopic,
    ) -> None:
        self.scope = scope
        self.config = config
        self.vpc = network.vpc
        self.subnets = network.private_subnets
        self.key = network.key
        self.load_balancers: dict[str, LoadBalancer] = {}
        if not exposed:
            return
        access_logs = self._access_log_bucket()
        self.load_balancers = {
            name: self._load_balancer(spec, access_logs) for name, spec in exposed.items()
        }
        for spec in exposed.values():
            if spec.exposure is Exposure.EXTERNAL:
                _waf_alarm(alarms, config, spec)

    def _access_log_bucket(self) -> s3.Bucket:
        bucket = s3.Bucket(
            self.scope,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=Duration.days(90),
                    noncurrent_version_expiration=Duration.days(30),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
        )
        acknowledge_nag(
            bucket,
            "AwsSolutions-S1",
            "this bucket holds the access logs; logging its own access would loop",
        )
        for check, reason in (
            ("CKV_AWS_18", "this bucket holds the access logs; logging its own access would loop"),
            ("CKV_AWS_145", "ALB access logs can only be written to SSE-S3 buckets, not SSE-KMS"),
            ("CKV_AWS_144", "access logs are not replicated to another region: kept 90 days here"),
            ("CKV2_AWS_62", "nothing reacts to new log objects; they are read on demand"),
        ):
            skip_checkov(bucket, check, reason)
        return bucket

    def _web_acl(self, spec: ServiceSpec) -> wafv2.CfnWebACL:
        """The service's web ACL: its body limit, AWS managed rule groups, rate limits per
        client address and per caller (the spec's ``[edge]`` figures), logged to CloudWatch.

        One per external service, so each service's figures apply to its own traffic only.
        """
        edge = spec.edge
        name = pascal(spec.name)
        rules = [_body_limit_rule(edge, priority=0)]
        managed = (
            "AWSManagedRulesCommonRuleSet",
            "AWSManagedRulesKnownBadInputsRuleSet",
            "AWSManagedRulesAmazonIpReputationList",
            "AWSManagedRulesSQLiRuleSet",
        )
        rules += [
            wafv2.CfnWebACL.RuleProperty(
                name=group,
                priority=priority,
                override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                        vendor_name="AWS",
                        name=group,
                        rule_action_overrides=_body_size_counted(edge)
                        if group == "AWSManagedRulesCommonRuleSet"
                        else None,
                    )
                ),
                visibility_config=_visibility(group),
            )
            for priority, group in enumerate(managed, start=len(rules))
        ]
        rules += [
            _rate_rule("RatePerIp", edge.requests_per_ip, edge, len(rules)),
            # Each token is its own key; requests without the header are not counted here (the
            # per-address rule sees them), so rotating garbage headers gains nothing.
            _rate_rule(
                "RatePerCaller",
                edge.requests_per_caller,
                edge,
                len(rules) + 1,
                custom_keys=[
                    wafv2.CfnWebACL.RateBasedStatementCustomKeyProperty(
                        header=wafv2.CfnWebACL.RateLimitHeaderProperty(
                            name="authorization",
                            text_transformations=[
                                wafv2.CfnWebACL.TextTransformationProperty(priority=0, type="NONE")
                            ],
                        )
                    )
                ],
            ),
        ]
        prefix = f"{self.config.prefix}-{spec.name}"
        acl = wafv2.CfnWebACL(
            self.scope,
            f"WebAcl{name}",
            name=f"{prefix}-web",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            rules=rules,
            visibility_config=_visibility(f"{prefix}-web"),
            custom_response_bodies={
                "too-large": wafv2.CfnWebACL.CustomResponseBodyProperty(
                    content_type="APPLICATION_JSON",
                    content=json.dumps(
                        {
                            "detail": "request body too large",
                            "max_body_bytes": edge.max_body_bytes,
                        }
                    ),
                )
            },
        )
        waf_logs = logs.LogGroup(
            self.scope,
            f"WafLogs{name}",
            # WAF delivers only to log groups named aws-waf-logs-*.
            log_group_name=f"aws-waf-logs-{prefix}",
            retention=self.config.log_retention,
            encryption_key=self.key,
            removal_policy=RemovalPolicy.RETAIN,
        )
        wafv2.CfnLoggingConfiguration(
            self.scope,
            f"WebAclLogging{name}",
            resource_arn=acl.attr_arn,
            log_destination_configs=[
                Stack.of(self.scope).format_arn(
                    service="logs",
                    resource="log-group",
                    resource_name=waf_logs.log_group_name,
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                )
            ],
        )
        return acl

    def _load_balancer(self, spec: ServiceSpec, access_logs: s3.Bucket) -> LoadBalancer:
        external = spec.exposure is Exposure.EXTERNAL
        name = pascal(spec.name)
        security_group = ec2.SecurityGroup(
            self.scope,
            f"Alb{name}Sg",
            vpc=self.vpc,
            description=f"{self.config.prefix}: {spec.exposure.value} ALB of {spec.name}",
            allow_all_outbound=False,
        )
        if external:
            for port in (HTTPS_PORT, 80):
                security_group.add_ingress_rule(
                    ec2.Peer.any_ipv4(), ec2.Port.tcp(port), "the internet (80 redirects)"
                )
            skip_checkov(
                security_group, "CKV_AWS_260", "port 80 answers only with a redirect to HTTPS"
            )
            acknowledge_nag(
                security_group,
                "AwsSolutions-EC23",
                "an internet-facing ALB: 443 open to all by design, 80 only redirects; WAF filters",
            )
        alb = elbv2.ApplicationLoadBalancer(
            self.scope,
            f"Alb{name}",
            load_balancer_name=f"{self.config.prefix}-{spec.name}"[:32],
            vpc=self.vpc,
            internet_facing=external,
            vpc_subnets=(
                ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC) if external else self.subnets
            ),
            security_group=security_group,
            drop_invalid_header_fields=True,
            deletion_protection=True,
            desync_mitigation_mode=elbv2.DesyncMitigationMode.DEFENSIVE,
            idle_timeout=Duration.seconds(spec.load_balancer.idle_timeout_seconds),
        )
        alb.log_access_logs(access_logs, prefix=spec.name)
        if external:
            alb.add_redirect(source_port=80, target_port=HTTPS_PORT)
            if self.config.shield_advanced:
                # Needs the account's Shield Advanced subscription (a monthly fee and a
                # one-year commitment): DDoS response team, cost protection, L7 mitigation.
                shield.CfnProtection(
                    self.scope,
                    f"Alb{name}Shield",
                    name=f"{self.config.prefix}-{spec.name}",
                    resource_arn=alb.load_balancer_arn,
                )
            wafv2.CfnWebACLAssociation(
                self.scope,
                f"Alb{name}Waf",
                resource_arn=alb.load_balancer_arn,
                web_acl_arn=self._web_acl(spec).attr_arn,
            )
        else:
            skip_checkov(
                alb,
                "CKV2_AWS_28",
                "internal ALB: reachable only from its callers' security groups; WAF guards "
                "the internet-facing one",
            )
        assert spec.port is not None  # the spec requires a port when exposed
        return LoadBalancer(
            alb=alb,
            security_group=security_group,
            external=external,
            port=HTTPS_PORT if external else spec.port,
        )


class ListenerRules:
    """On an internet-facing service's production listener, before the service's own rules:
    the private paths refused, the token paths checked by the load balancer.

    ``steady_target`` is where a checked request goes; None where the deployment moves a single
    production rule between colours (a rule forwarding elsewhere would not follow it), and the
    service alone checks tokens there.
    """

    def __init__(
        self,
        scope: Construct,
        *,
        spec: ServiceSpec,
        auth: Auth | None,
        listener: elbv2.IApplicationListener,
        steady_target: elbv2.IApplicationTargetGroup | None,
    ) -> None:
        self.scope, self.spec, self.auth = scope, spec, auth
        self._private_paths(listener)
        self._token_paths(listener, steady_target)

    def _private_paths(self, listener: elbv2.IApplicationListener) -> None:
        """The spec's private paths (readiness, API docs) answer 404 to the internet.

        The load balancer's health checks and the tasks' own checks reach the targets directly,
        not through the listener, so they are unaffected.
        """
        for index, paths in enumerate(_path_chunks(self.spec.edge.private_paths)):
            elbv2.ApplicationListenerRule(
                self.scope,
                f"PrivatePaths{index}",
                listener=listener,
                priority=PRIVATE_PATHS_PRIORITY + index,
                conditions=[elbv2.ListenerCondition.path_patterns(paths)],
                action=elbv2.ListenerAction.fixed_response(
                    404, content_type="application/json", message_body='{"detail":"Not Found"}'
                ),
            )

    def _token_paths(
        self,
        listener: elbv2.IApplicationListener,
        target_group: elbv2.IApplicationTargetGroup | None,
    ) -> None:
        """The load balancer verifies the access token on the spec's ``[auth] paths``.

        Defence in depth: ALB's ``jwt-validation`` action checks the signature (the pool's
        JWKS), ``iss``, ``exp`` and ``token_use`` before a request reaches a task; the service
        still verifies every token and its scopes itself. CloudFormation has the action; the
        CDK has no L2 for it yet, hence the L1 rule. ECS-native blue/green moves one production
        rule between the colours, which a second forwarding rule would not follow: there the
        service alone verifies.
        """
        spec, auth = self.spec, self.auth
        if auth is None or not spec.auth or not spec.auth.paths:
            return
        if target_group is None:
            Annotations.of(self.scope).add_warning_v2(
                "infra:albTokenCheckSkipped",
                f"{spec.name}: ECS-native blue/green manages a single production rule, so the "
                "load balancer does not verify tokens; the service does",
            )
            return
        for index, paths in enumerate(_path_chunks(spec.auth.paths)):
            elbv2.CfnListenerRule(
                self.scope,
                f"TokenPaths{index}",
                listener_arn=listener.listener_arn,
                priority=TOKEN_PATHS_PRIORITY + index,
                conditions=[
                    elbv2.CfnListenerRule.RuleConditionProperty(
                        field="path-pattern",
                        path_pattern_config=elbv2.CfnListenerRule.PathPatternConfigProperty(
                            values=paths
                        ),
                    )
                ],
                actions=[
                    elbv2.CfnListenerRule.ActionProperty(
                        type="jwt-validation",
                        order=1,
                        jwt_validation_config=elbv2.CfnListenerRule.JwtValidationConfigProperty(
                            issuer=auth.issuer,
                            jwks_endpoint=auth.jwks_url,
                            additional_claims=[
                                elbv2.CfnListenerRule.JwtValidationActionAdditionalClaimProperty(
                                    name="token_use", format="single-string", values=["access"]
                                )
                            ],
                        ),
                    ),
                    elbv2.CfnListenerRule.ActionProperty(
                        type="forward", order=2, target_group_arn=target_group.target_group_arn
                    ),
                ],
            )


def alias_record(
    scope: Construct, *, config: EnvConfig, service: str, lb: LoadBalancer
) -> route53.ARecord | None:
    """``{service}.{domain}`` to an internet-facing load balancer, when the hosted zone is known."""
    if not lb.external or not config.hosted_zone_id:
        return None
    return route53.ARecord(
        scope,
        "Dns",
        zone=route53.HostedZone.from_hosted_zone_attributes(
            scope, "Zone", hosted_zone_id=config.hosted_zone_id, zone_name=config.domain
        ),
        record_name=service,
        target=route53.RecordTarget.from_alias(route53_targets.LoadBalancerTarget(lb.alb)),
    )


def _path_chunks(paths: Sequence[str]) -> list[list[str]]:
    """``paths`` in groups one ALB rule condition takes (at most five values each)."""
    return [
        list(paths[index : index + _VALUES_PER_CONDITION])
        for index in range(0, len(paths), _VALUES_PER_CONDITION)
    ]


def waf_blocked(prefix: str, region: str, service: str, period: Duration) -> cloudwatch.Metric:
    """The requests a service's web ACL blocked, by every rule."""
    return cloudwatch.Metric(
        namespace="AWS/WAFV2",
        metric_name="BlockedRequests",
        dimensions_map={"WebACL": f"{prefix}-{service}-web", "Region": region, "Rule": "ALL"},
        statistic="Sum",
        period=period,
    )


def _waf_alarm(alarms: AlarmTopic, config: EnvConfig, spec: ServiceSpec) -> None:
    """A spike of blocked requests: more in one rate window than one client may send."""
    edge, name = spec.edge, spec.name
    alarms.alarm(
        f"WafBlocked{pascal(name)}",
        name=f"{name}-waf-blocked",
        description=(
            f"WAF blocked more than {edge.requests_per_ip} requests to {name} in "
            f"{edge.rate_window_seconds} s (the per-address limit of one window): an "
            "attack, or a rule blocking real traffic"
        ),
        metric=waf_blocked(
            config.prefix, config.region, name, Duration.seconds(edge.rate_window_seconds)
        ),
        threshold=edge.requests_per_ip,
        comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods=1,
    )


def greater_than_pattern(limit: int) -> str:
    """A regular expression matching exactly the decimal integers above ``limit``.

    WAF compares no numbers, but it matches regular expressions: this one on Content-Length
    tells a declared body size above the limit without inspecting the body.
    """
    digits = str(limit)
    # Longer numbers (leading zeros aside) are all greater.
    branches = [rf"[1-9][0-9]{{{len(digits)},}}"]
    # Same length: equal up to position i, then a greater digit, then anything.
    for index, digit in enumerate(digits):
        if digit == "9":
            continue
        rest = len(digits) - index - 1
        tail = rf"[0-9]{{{rest}}}" if rest else ""
        branches.append(f"{digits[:index]}[{int(digit) + 1}-9]{tail}")
    return f"^0*(?:{'|'.join(branches)})$"


def _body_limit_rule(edge: EdgeSpec, *, priority: int) -> wafv2.CfnWebACL.RuleProperty:
    """413 when Content-Length declares more than ``max_body_bytes``.

    Behind an ALB, WAF reads only the first 8 KB of a body, so it cannot measure a larger
    one: the declared length is what it can judge. A body sent without Content-Length (chunked)
    passes here and the service counts it (MAX_BODY_BYTES, the same figure) while reading it.
    """
    return wafv2.CfnWebACL.RuleProperty(
        name="BodyTooLarge",
        priority=priority,
        action=wafv2.CfnWebACL.RuleActionProperty(
            block=wafv2.CfnWebACL.BlockActionProperty(
                custom_response=wafv2.CfnWebACL.CustomResponseProperty(
                    response_code=413, custom_response_body_key="too-large"
                )
            )
        ),
        statement=wafv2.CfnWebACL.StatementProperty(
            regex_match_statement=wafv2.CfnWebACL.RegexMatchStatementProperty(
                regex_string=greater_than_pattern(edge.max_body_bytes),
                field_to_match=wafv2.CfnWebACL.FieldToMatchProperty(
                    single_header={"Name": "content-length"}
                ),
                text_transformations=[
                    wafv2.CfnWebACL.TextTransformationProperty(priority=0, type="NONE")
                ],
            )
        ),
        visibility_config=_visibility("BodyTooLarge"),
    )


def _body_size_counted(edge: EdgeSpec) -> list[wafv2.CfnWebACL.RuleActionOverrideProperty]:
    """The common rule set blocks bodies over 8 KB (SizeRestrictions_BODY): counted instead
    when the service accepts more, since BodyTooLarge and the service hold the real limit."""
    if edge.max_body_bytes <= WAF_BODY_INSPECTION_BYTES:
        return []
    return [
        wafv2.CfnWebACL.RuleActionOverrideProperty(
            name="SizeRestrictions_BODY",
            action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={}),
        )
    ]


def _rate_rule(
    name: str,
    limit: int,
    edge: EdgeSpec,
    priority: int,
    custom_keys: list[wafv2.CfnWebACL.RateBasedStatementCustomKeyProperty] | None = None,
) -> wafv2.CfnWebACL.RuleProperty:
    return wafv2.CfnWebACL.RuleProperty(
        name=name,
        priority=priority,
        action=wafv2.CfnWebACL.RuleActionProperty(block={}),
        statement=wafv2.CfnWebACL.StatementProperty(
            rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                limit=limit,
                evaluation_window_sec=edge.rate_window_seconds,
                aggregate_key_type="CUSTOM_KEYS" if custom_keys else "IP",
                custom_keys=custom_keys,
            )
        ),
        visibility_config=_visibility(name),
    )


def _visibility(metric: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=True
    )
