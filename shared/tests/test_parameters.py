"""The Parameter Store settings source against moto: paths, paging, names, failures."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings

from servicekit import aws
from servicekit.errors import ConfigurationError
from servicekit.parameters import Parameter, ParameterStoreSource, parameter_paths, read_path
from servicekit.testing import MotoServer

SERVICE, SHARED = parameter_paths("suite", "test", "api")


class Database(BaseModel):
    host: str = "localhost"
    pool_size: int = 5


class Settings(BaseSettings):
    log_level: str = "INFO"
    workers: int = 1
    api_key: SecretStr | None = None
    database: Database = Database()
    flags: dict[str, str] = {}


@pytest.fixture
def ssm(aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    return aws.client("ssm")


def put(ssm: Any, name: str, value: str, kind: str = "String") -> None:
    ssm.put_parameter(Name=name, Value=value, Type=kind, Overwrite=True)


def read(paths: tuple[str, ...] = (SERVICE, SHARED)) -> dict[str, Any]:
    return ParameterStoreSource(Settings, paths)()


def calls_by_path(ssm: Any) -> list[str]:
    paths: list[str] = []
    ssm.meta.events.register(
        "before-parameter-build.ssm.GetParametersByPath",
        lambda params, **_: paths.append(params["Path"]),
    )
    return paths


def test_paths_name_the_service_before_the_shared_path() -> None:
    assert (SERVICE, SHARED) == ("/suite/test/api", "/suite/test/shared")


def test_service_parameters_override_shared_ones_field_by_field(ssm: Any) -> None:
    put(ssm, f"{SHARED}/log_level", "WARNING")
    put(ssm, f"{SHARED}/workers", "2")
    put(ssm, f"{SERVICE}/LOG_LEVEL", "DEBUG")
    put(ssm, f"{SHARED}/database/host", "db.internal")
    put(ssm, f"{SERVICE}/database/pool-size", "20")

    assert read() == {
        "log_level": "DEBUG",
        "workers": "2",
        "database": {"host": "db.internal", "pool_size": "20"},
    }


def test_securestring_values_are_decrypted(ssm: Any) -> None:
    put(ssm, f"{SERVICE}/api_key", "s3cr3t-value", kind="SecureString")
    assert read() == {"api_key": "s3cr3t-value"}


def test_flags_are_not_settings(ssm: Any) -> None:
    put(ssm, f"{SERVICE}/flags/new_checkout", "true")
    put(ssm, f"{SHARED}/flags/banner", "hello")
    assert read() == {}


def test_twenty_five_parameters_cost_three_calls(ssm: Any) -> None:
    for index in range(25):
        put(ssm, f"{SERVICE}/extra/p{index:02d}", str(index))
    put(ssm, f"{SERVICE}/workers", "4")
    calls = calls_by_path(ssm)

    source = ParameterStoreSource(Settings, (SERVICE, SHARED))

    assert source() == {"workers": "4"}
    assert len(source.env_vars) == 26
    assert calls.count(SERVICE) <= 3
    assert calls.count(SHARED) == 1


def test_no_paths_means_no_calls(ssm: Any) -> None:
    calls = calls_by_path(ssm)
    assert read(()) == {}
    assert calls == []


def test_names_record_the_parameter_behind_each_key(ssm: Any) -> None:
    put(ssm, f"{SHARED}/workers", "2")
    put(ssm, f"{SERVICE}/Database/Pool-Size", "3")
    source = ParameterStoreSource(Settings, (SERVICE, SHARED))
    assert source.names == {
        "workers": f"{SHARED}/workers",
        "database/pool_size": f"{SERVICE}/Database/Pool-Size",
    }


def test_an_unreachable_parameter_store_names_both_paths(aws_env: MotoServer, ssm: Any) -> None:
    with aws_env.outage(), pytest.raises(ConfigurationError) as raised:
        read()
    assert len(raised.value.problems) == 2
    assert all("ssm on /" in p and "unreachable" in p for p in raised.value.problems)
    assert SERVICE in str(raised.value)
    assert SHARED in str(raised.value)


def test_read_path_pages_decrypts_and_names_relative_to_the_path(ssm: Any) -> None:
    for index in range(12):
        put(ssm, f"{SERVICE}/p{index:02d}", str(index))
    put(ssm, f"{SERVICE}/key", "s3cr3t", kind="SecureString")
    put(ssm, f"{SERVICE}/tiers", "gold,silver", kind="StringList")
    put(ssm, f"{SERVICE}/nested/deeper", "x")
    put(ssm, f"{SERVICE}x/beside", "not under the path")
    calls = calls_by_path(ssm)

    found = read_path(f"{SERVICE}/", recursive=True)

    assert found["key"] == Parameter(f"{SERVICE}/key", "s3cr3t", "SecureString")
    assert found["tiers"] == Parameter(f"{SERVICE}/tiers", "gold,silver", "StringList")
    assert found["nested/deeper"].value == "x"
    assert len(found) == 15
    assert calls == [SERVICE] * 2  # 15 parameters, 10 a page


def test_read_path_without_recursion_stays_at_its_level(ssm: Any) -> None:
    put(ssm, f"{SERVICE}/flags/banner", "hello")
    put(ssm, f"{SERVICE}/flags/deeper/ignored", "x")
    assert list(read_path(f"{SERVICE}/flags", recursive=False)) == ["banner"]


def moto_auth(endpoint_url: str, count: str) -> None:
    request = urllib.request.Request(
        f"{endpoint_url}/moto-api/reset-auth",
        data=count.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


@pytest.fixture
def denied(aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process runs as an IAM user allowed only ssm:GetParameter, with IAM enforced."""
    iam = aws.client("iam")
    iam.create_user(UserName="task")
    policy = {"Effect": "Allow", "Action": ["ssm:GetParameter"], "Resource": "*"}
    iam.put_user_policy(
        UserName="task",
        PolicyName="too-narrow",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [policy]}),
    )
    key = iam.create_access_key(UserName="task")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    aws.reset_clients()
    moto_auth(aws_env.endpoint_url, "0")
    try:
        yield
    finally:
        moto_auth(aws_env.endpoint_url, "inf")


@pytest.mark.usefixtures("denied")
def test_a_denied_read_names_the_action_and_both_paths() -> None:
    with pytest.raises(ConfigurationError) as raised:
        read()
    problems = raised.value.problems
    assert len(problems) == 2
    for path in (SERVICE, SHARED):
        (problem,) = (problem for problem in problems if f"on {path} (" in problem)
        assert problem.startswith("AccessDenied: not allowed to call ssm:GetParametersByPath")
        assert "not authorized" in problem
