"""cdk.json: the recommended feature flags of the installed aws-cdk-lib; the environment keys."""

from __future__ import annotations

import json

import pytest
from aws_cdk import App

from infra.config import ContextError, EnvConfig
from infra.feature_flags import CDK_JSON, is_feature_flag, recommended_flags

CONTEXT = json.loads(CDK_JSON.read_text())["context"]


def test_cdk_json_holds_exactly_the_recommended_flags() -> None:
    flags = {key: value for key, value in CONTEXT.items() if is_feature_flag(key)}
    assert flags == recommended_flags(), "run `uv run python -m infra.feature_flags`"


def test_availability_zones_are_pinned_for_the_account_and_region() -> None:
    key = f"availability-zones:account={CONTEXT['account']}:region={CONTEXT['region']}"
    assert len(CONTEXT[key]) >= 2


def test_the_environment_comes_from_context() -> None:
    config = EnvConfig.from_context(App(context=CONTEXT).node)
    assert (config.app, config.env, config.prefix) == ("suite", "dev", "suite-dev")
    assert config.parameter_path("api") == "/suite/dev/api"
    assert config.secret_name("db") == "suite/dev/db"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"domain": None}, "'domain' is required"),
        ({"maxAzs": 1}, "at least two AZs"),
        ({"natGateways": 3}, "natGateways 3"),
        ({"logRetentionDays": 31}, "logRetentionDays 31"),
        ({"appName": "Suite"}, "appName 'Suite'"),
    ],
)
def test_a_bad_context_names_the_key(change: dict[str, object], message: str) -> None:
    context = {key: value for key, value in (CONTEXT | change).items() if value is not None}
    with pytest.raises(ContextError, match=message):
        EnvConfig.from_context(App(context=context).node)
