"""cdk.json: the recommended feature flags of the installed aws-cdk-lib; the environment keys;
the images' digests."""

from __future__ import annotations

import json

import pytest
from aws_cdk import App

from infra.app import build_app
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
    assert config.db_max_connections is None  # RDS's default for the class
    # `-c dbMaxConnections=900` arrives as text.
    overridden = EnvConfig.from_context(App(context=CONTEXT | {"dbMaxConnections": "900"}).node)
    assert overridden.db_max_connections == 900


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"domain": None}, "'domain' is required"),
        ({"maxAzs": 1}, "at least two AZs"),
        ({"natGateways": 3}, "natGateways 3"),
        ({"logRetentionDays": 31}, "logRetentionDays 31"),
        ({"appName": "Suite"}, "appName 'Suite'"),
        ({"githubRepository": "ecs-suite"}, "githubRepository 'ecs-suite' is not OWNER/NAME"),
        ({"deployEnvironments": 3}, "deployEnvironments must be a list of names, not int"),
        ({"dbMaxConnections": 0}, "dbMaxConnections 0: a positive number"),
    ],
)
def test_a_bad_context_names_the_key(change: dict[str, object], message: str) -> None:
    context = {key: value for key, value in (CONTEXT | change).items() if value is not None}
    with pytest.raises(ContextError, match=message):
        EnvConfig.from_context(App(context=context).node)


DIGEST = f"sha256:{'ab' * 32}"


@pytest.mark.parametrize("value", [{"api": DIGEST}, json.dumps({"api": DIGEST})])
def test_image_digests_come_as_an_object_or_its_json(value: object) -> None:
    config = EnvConfig.from_context(App(context=CONTEXT | {"imageDigests": value}).node)
    assert config.image_tag_or_digest("api") == DIGEST
    assert config.image_tag_or_digest("worker") == "bootstrap"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"worker": "sha256:abc"}, r"imageDigests: worker's 'sha256:abc' is not an image digest"),
        ({"api": DIGEST.upper()}, "imageDigests: api's"),
        ({"api": DIGEST.removeprefix("sha256:")}, "imageDigests: api's"),
        ({"api": 7}, "imageDigests: api's '7'"),
        ('{"api": ', "imageDigests is not JSON"),
        ("", "imageDigests is not JSON"),
        ([DIGEST], "imageDigests must map service names to digests, not list"),
    ],
)
def test_a_bad_digest_fails_naming_the_service(value: object, message: str) -> None:
    with pytest.raises(ContextError, match=message):
        EnvConfig.from_context(App(context=CONTEXT | {"imageDigests": value}).node)


def test_a_digest_for_no_service_folder_fails_before_synthesis() -> None:
    """A typo must not leave the service on the imageTag unnoticed."""
    with pytest.raises(
        ContextError,
        match=r"imageDigests names no service folder services/<name>/: apii \(services: api, ",
    ):
        build_app(context={"imageDigests": {"apii": DIGEST}}, nag=False)
