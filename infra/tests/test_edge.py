"""The api's edge: Cognito and the auth contract, the ALB's token checks and private paths, the
WAF figures taken from the api spec, the tasks' capabilities and database TLS settings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from infra.edge import greater_than_pattern
from infra.service_config import RDS_CA_BUNDLE
from infra.testing import Assembly, container
from suite_contract.spec import ServiceSpec, find_repository_root, load_specs

ROOT = find_repository_root(Path(__file__).parent)
API = load_specs(ROOT)["api"]
SCOPE_PREFIX = "https://api.example.com/"


def _environment(assembly: Assembly, stack: str) -> dict[str, Any]:
    return {e["Name"]: e["Value"] for e in container(assembly, stack, "app")["Environment"]}


def _output(assembly: Assembly, value: Any) -> Any:
    """What a weak cross-stack reference (Fn::GetStackOutput) stands for in its stack."""
    if isinstance(value, dict) and "Fn::GetStackOutput" in value:
        reference = value["Fn::GetStackOutput"]
        return assembly.templates[reference["StackName"]]["Outputs"][reference["OutputName"]][
            "Value"
        ]
    return value


def _render(assembly: Assembly, value: Any) -> str:
    """A string value with each reference shown as ``<LogicalId>`` or ``<LogicalId.Attr>``."""
    if isinstance(value, str):
        return value
    value = _output(assembly, value)
    if "Ref" in value:
        return f"<{value['Ref']}>"
    if "Fn::GetAtt" in value:
        return f"<{'.'.join(value['Fn::GetAtt'])}>"
    [separator, parts] = value["Fn::Join"]
    return str(separator).join(_render(assembly, part) for part in parts)


def _logical_ids(assembly: Assembly, stack: str, kind: str) -> set[str]:
    return set(assembly.resources(stack, kind))


def _web_acl(assembly: Assembly) -> dict[str, Any]:
    [acl] = assembly.resources("platform", "AWS::WAFv2::WebACL").values()
    properties: dict[str, Any] = acl["Properties"]
    return properties


def _rule(acl: dict[str, Any], name: str) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [r for r in acl["Rules"] if r["Name"] == name]
    [rule] = rules
    return rule


def test_the_user_pool_serves_machine_clients_only(assembly: Assembly) -> None:
    platform = assembly.template("platform")
    [pool] = assembly.resources("platform", "AWS::Cognito::UserPool").values()
    properties = pool["Properties"]
    assert pool["DeletionPolicy"] == "Retain"
    assert properties["DeletionProtection"] == "ACTIVE"
    assert properties["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert properties["MfaConfiguration"] == "ON"
    assert properties["Policies"]["PasswordPolicy"]["MinimumLength"] >= 14
    [(server_id, server)] = assembly.resources(
        "platform", "AWS::Cognito::UserPoolResourceServer"
    ).items()
    identifier = server["Properties"]["Identifier"]
    assert identifier == SCOPE_PREFIX.rstrip("/")
    assert API.auth is not None
    assert {s["ScopeName"] for s in server["Properties"]["Scopes"]} == {
        "jobs:read",
        "jobs:write",
        "jobs:admin",
    }
    [client] = assembly.resources("platform", "AWS::Cognito::UserPoolClient").values()
    properties = client["Properties"]
    assert properties["GenerateSecret"] is True
    assert properties["AllowedOAuthFlows"] == ["client_credentials"]
    assert properties["AllowedOAuthFlowsUserPoolClient"] is True
    # The resource server's identifier (its Ref) is the scopes' prefix, as the api is told.
    scopes = [
        _render(assembly, scope).replace(f"<{server_id}>", identifier)
        for scope in properties["AllowedOAuthScopes"]
    ]
    assert sorted(scopes) == sorted(
        f"{SCOPE_PREFIX}{scope}" for scope in API.auth.clients["machine"]
    )
    platform.has_resource_properties(
        "AWS::Cognito::UserPoolDomain", {"Domain": "suite-dev-123456789012"}
    )


def test_the_api_gets_the_auth_contract(assembly: Assembly) -> None:
    environment = _environment(assembly, "api")
    [pool] = _logical_ids(assembly, "platform", "AWS::Cognito::UserPool")
    [client] = _logical_ids(assembly, "platform", "AWS::Cognito::UserPoolClient")
    assert (
        _render(assembly, environment["AUTH__ISSUER"])
        == f"https://cognito-idp.eu-west-1.amazonaws.com/<{pool}>"
    )
    assert json.loads(_render(assembly, environment["AUTH__AUDIENCES"])) == [f"<{client}>"]
    assert environment["AUTH__SCOPE_PREFIX"] == SCOPE_PREFIX
    for service in ("worker", "scheduler"):
        assert not any(name.startswith("AUTH__") for name in _environment(assembly, service))


def _listener_rules(assembly: Assembly) -> list[dict[str, Any]]:
    return [
        rule["Properties"]
        for rule in assembly.resources("api", "AWS::ElasticLoadBalancingV2::ListenerRule").values()
    ]


def _paths(rule: dict[str, Any]) -> list[str]:
    [condition] = rule["Conditions"]
    values: list[str] = condition["PathPatternConfig"]["Values"]
    return values


def test_the_load_balancer_verifies_tokens_on_the_jobs_paths(assembly: Assembly) -> None:
    environment = _environment(assembly, "api")
    assert API.auth is not None
    [rule] = [r for r in _listener_rules(assembly) if r["Actions"][0]["Type"] == "jwt-validation"]
    assert _paths(rule) == list(API.auth.paths)
    check, forward = rule["Actions"]
    assert (check["Order"], forward["Order"], forward["Type"]) == (1, 2, "forward")
    config = check["JwtValidationConfig"]
    issuer = _render(assembly, environment["AUTH__ISSUER"])
    assert _render(assembly, config["Issuer"]) == issuer
    assert _render(assembly, config["JwksEndpoint"]) == f"{issuer}/.well-known/jwks.json"
    assert config["AdditionalClaims"] == [
        {"Name": "token_use", "Format": "single-string", "Values": ["access"]}
    ]
    # The production target group: the one the listener's default action forwards to.
    [listener] = assembly.resources("api", "AWS::ElasticLoadBalancingV2::Listener").values()
    [default] = listener["Properties"]["DefaultActions"]
    assert forward["TargetGroupArn"] == default["TargetGroupArn"]


def test_private_paths_answer_404_to_the_internet(assembly: Assembly) -> None:
    rules = _listener_rules(assembly)
    [private] = [r for r in rules if r["Actions"][0]["Type"] == "fixed-response"]
    assert set(_paths(private)) == {"/ready", "/docs", "/docs/*", "/openapi.json", "/redoc"}
    assert private["Actions"][0]["FixedResponseConfig"]["StatusCode"] == "404"
    # Evaluated before any rule that forwards.
    assert private["Priority"] == min(rule["Priority"] for rule in rules)
    # The worker's internal load balancer serves its own probes to the services.
    assert not assembly.resources("worker", "AWS::ElasticLoadBalancingV2::ListenerRule")


@pytest.mark.parametrize("variant", ["assembly", "extended"])
def test_one_body_limit_for_waf_and_the_api(variant: str, request: pytest.FixtureRequest) -> None:
    """The spec's max_body_bytes is the api's MAX_BODY_BYTES and WAF's Content-Length limit;
    the 8 KB body rule of the common rule set only counts when the api accepts more."""
    assembly: Assembly = request.getfixturevalue(variant)
    spec = _specs(variant, request)["api"]
    limit = spec.edge.max_body_bytes
    assert _environment(assembly, "api")["MAX_BODY_BYTES"] == str(limit)
    acl = _web_acl(assembly)
    rule = _rule(acl, "BodyTooLarge")
    statement = rule["Statement"]["RegexMatchStatement"]
    assert statement["FieldToMatch"] == {"SingleHeader": {"Name": "content-length"}}
    assert statement["RegexString"] == greater_than_pattern(limit)
    assert rule["Action"]["Block"]["CustomResponse"]["ResponseCode"] == 413
    assert rule["Priority"] == 0
    common = _rule(acl, "AWSManagedRulesCommonRuleSet")["Statement"]["ManagedRuleGroupStatement"]
    overrides = common.get("RuleActionOverrides", [])
    if limit > 8 * 1024:
        assert overrides == [{"Name": "SizeRestrictions_BODY", "ActionToUse": {"Count": {}}}]
    else:
        assert overrides == []


@pytest.mark.parametrize("limit", [1, 9, 10, 8192, 65536, 99999, 1048576])
def test_the_content_length_pattern_matches_exactly_the_larger_numbers(limit: int) -> None:
    pattern = re.compile(greater_than_pattern(limit))
    for number in [*range(0, 2 * limit + 20), limit * 10, limit * 10 + 7, 10**9]:
        assert bool(pattern.match(str(number))) == (number > limit), number
    assert pattern.match(f"00{limit + 1}")
    assert len(pattern.pattern) <= 512  # WAF's regex length limit


@pytest.mark.parametrize("variant", ["assembly", "extended"])
def test_rate_limits_per_address_and_per_caller(
    variant: str, request: pytest.FixtureRequest
) -> None:
    assembly: Assembly = request.getfixturevalue(variant)
    edge = _specs(variant, request)["api"].edge
    acl = _web_acl(assembly)
    per_ip = _rule(acl, "RatePerIp")["Statement"]["RateBasedStatement"]
    assert per_ip == {
        "AggregateKeyType": "IP",
        "Limit": edge.requests_per_ip,
        "EvaluationWindowSec": edge.rate_window_seconds,
    }
    per_caller = _rule(acl, "RatePerCaller")["Statement"]["RateBasedStatement"]
    assert per_caller["AggregateKeyType"] == "CUSTOM_KEYS"
    assert per_caller["Limit"] == edge.requests_per_caller
    assert per_caller["EvaluationWindowSec"] == edge.rate_window_seconds
    assert [key["Header"]["Name"] for key in per_caller["CustomKeys"]] == ["authorization"]
    for name in ("RatePerIp", "RatePerCaller"):
        assert _rule(acl, name)["Action"] == {"Block": {}}


def test_gunicorn_trusts_forwarded_headers_from_the_vpc_only(assembly: Assembly) -> None:
    environment = _environment(assembly, "api")
    [vpc] = _logical_ids(assembly, "network", "AWS::EC2::VPC")
    assert _output(assembly, environment["FORWARDED_ALLOW_IPS"]) == {
        "Fn::GetAtt": [vpc, "CidrBlock"]
    }
    assert environment["WEB_CONCURRENCY"] == str(API.task.processes)
    assert environment["DATABASE__POOL_SIZE"] == str(API.database and API.database.pool_size)


@pytest.mark.parametrize("variant", ["assembly", "extended"])
def test_every_container_drops_every_capability_and_verifies_the_database(
    variant: str, request: pytest.FixtureRequest
) -> None:
    assembly: Assembly = request.getfixturevalue(variant)
    specs = _specs(variant, request)
    checked = 0
    for name, spec in specs.items():
        [task] = assembly.resources(name, "AWS::ECS::TaskDefinition").values()
        for definition in task["Properties"]["ContainerDefinitions"]:
            assert definition["LinuxParameters"]["Capabilities"] == {"Drop": ["ALL"]}, (
                name,
                definition["Name"],
            )
            checked += 1
        environment = _environment(assembly, name)
        assert spec.uses_database
        assert environment["DATABASE__SSLMODE"] == "verify-full"
        assert environment["DATABASE__SSLROOTCERT"] == RDS_CA_BUNDLE
    assert checked == 2 * len(specs)


def _specs(variant: str, request: pytest.FixtureRequest) -> dict[str, ServiceSpec]:
    """The specs the variant was synthesized from."""
    root: Path = ROOT if variant == "assembly" else request.getfixturevalue("extended_root")
    return load_specs(root)
