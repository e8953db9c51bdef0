"""ServiceSettings.load against moto: precedence, conversion, secrets, and the start-up error."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field, SecretStr

from servicekit import aws
from servicekit.errors import ConfigurationError
from servicekit.parameters import parameter_paths
from servicekit.settings import RdsSecret, SecretRef, ServiceSettings
from servicekit.testing import MotoServer

KNOWN_SECRET = "Kn0wn-s3cret-VALUE-9f2c"


class Database(BaseModel):
    host: str
    pool_size: int = 5


class Settings(ServiceSettings):
    database: Database
    api_key: SecretStr
    workers: int = 1
    debug: bool = False
    regions: list[str] = Field(default_factory=list)
    from_default: str = "default"
    from_shared: str = "default"
    from_service: str = "default"
    from_dotenv: str = "default"
    from_env: str = "default"
    from_init: str = "default"


class SecretSettings(ServiceSettings):
    db_secret: SecretRef[RdsSecret] = Field(description="id of the RDS secret (DB_SECRET)")
    token: SecretRef[str] | None = None


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No stray variable or .env file of the machine reaches a test."""
    for name in {*Settings.model_fields, *SecretSettings.model_fields}:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def moto(aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    return aws_env


def identify(monkeypatch: pytest.MonkeyPatch, env: str = "test") -> tuple[str, str]:
    """Name the service in the environment; return its (service, shared) parameter paths."""
    monkeypatch.setenv("APP_NAME", "suite")
    monkeypatch.setenv("APP_ENV", env)
    monkeypatch.setenv("SERVICE_NAME", "api")
    return parameter_paths("suite", env, "api")


def put(name: str, value: str, kind: Literal["String", "SecureString"] = "String") -> None:
    aws.client("ssm").put_parameter(Name=name, Value=value, Type=kind, Overwrite=True)


def create_secret(value: dict[str, Any] | str) -> str:
    # Unique ids: the process-wide secret cache outlives moto's reset between tests.
    secret_id = f"suite/test/{uuid.uuid4().hex}"
    text = value if isinstance(value, str) else json.dumps(value)
    aws.client("secretsmanager").create_secret(Name=secret_id, SecretString=text)
    return secret_id


def rds_secret(password: str = KNOWN_SECRET) -> dict[str, Any]:
    return {
        "engine": "postgres",
        "host": "db.internal",
        "port": 5432,
        "username": "app",
        "password": password,
        "dbname": "jobs",
    }


def load_error(settings_cls: type[ServiceSettings], **overrides: Any) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as raised:
        settings_cls.load(**overrides)
    # Chained, the ValidationError would print the rejected values under the traceback.
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None or raised.value.__suppress_context__
    return raised.value


def ssm_calls() -> list[str]:
    paths: list[str] = []
    aws.client("ssm").meta.events.register(
        "before-parameter-build.ssm.GetParametersByPath",
        lambda params, **_: paths.append(params["Path"]),
    )
    return paths


@pytest.mark.usefixtures("moto")
@pytest.mark.parametrize("env", ["development", "production"])
def test_precedence_init_env_dotenv_service_shared_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: str
) -> None:
    service, shared = identify(monkeypatch, env)
    # Each field is set at its own level and at every level below it.
    for name in ("from_shared", "from_service", "from_dotenv", "from_env", "from_init"):
        put(f"{shared}/{name}", "shared")
    for name in ("from_service", "from_dotenv", "from_env", "from_init"):
        put(f"{service}/{name}", "service")
    (tmp_path / ".env").write_text("FROM_DOTENV=dotenv\nFROM_ENV=dotenv\nFROM_INIT=dotenv\n")
    monkeypatch.setenv("FROM_ENV", "env")
    monkeypatch.setenv("FROM_INIT", "env")
    put(f"{shared}/database/host", "db.internal")
    put(f"{shared}/api_key", KNOWN_SECRET, kind="SecureString")

    settings = Settings.load(from_init="init")

    # The .env file counts in development only.
    dotenv = "dotenv" if env == "development" else "service"
    assert (
        settings.from_default,
        settings.from_shared,
        settings.from_service,
        settings.from_dotenv,
        settings.from_env,
        settings.from_init,
    ) == ("default", "shared", "service", dotenv, "env", "init")
    assert settings.app_env == env


@pytest.mark.usefixtures("moto")
def test_in_development_the_dotenv_file_can_name_the_service(tmp_path: Path) -> None:
    service, _ = parameter_paths("suite", "development", "api")
    put(f"{service}/database/host", "db.internal")
    put(f"{service}/api_key", KNOWN_SECRET, kind="SecureString")
    (tmp_path / ".env").write_text("APP_NAME=suite\nSERVICE_NAME=api\n")

    settings = Settings.load()

    assert (settings.app_name, settings.app_env, settings.service_name) == (
        "suite",
        "development",
        "api",
    )
    assert settings.database.host == "db.internal"


@pytest.mark.usefixtures("moto")
def test_values_are_converted_nested_and_decrypted(monkeypatch: pytest.MonkeyPatch) -> None:
    service, shared = identify(monkeypatch)
    put(f"{service}/workers", "8")
    put(f"{service}/Debug", "true")
    put(f"{shared}/regions", '["eu-west-1", "eu-central-1"]')
    put(f"{shared}/database/host", "db.internal")
    put(f"{service}/database/pool-size", "20")
    put(f"{service}/api_key", KNOWN_SECRET, kind="SecureString")
    put(f"{service}/flags/workers", "not settings")

    settings = Settings.load()

    assert settings.workers == 8
    assert settings.debug is True
    assert settings.regions == ["eu-west-1", "eu-central-1"]
    assert settings.database == Database(host="db.internal", pool_size=20)
    assert settings.api_key.get_secret_value() == KNOWN_SECRET
    assert (settings.app_name, settings.service_name, settings.aws_region) == (
        "suite",
        "api",
        "eu-west-1",
    )


@pytest.mark.usefixtures("moto")
def test_a_nested_model_merges_env_and_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    service, _ = identify(monkeypatch)
    put(f"{service}/database/host", "from-ssm")
    put(f"{service}/database/pool_size", "3")
    monkeypatch.setenv("DATABASE__HOST", "from-env")
    monkeypatch.setenv("API_KEY", KNOWN_SECRET)

    assert Settings.load().database == Database(host="from-env", pool_size=3)


@pytest.mark.usefixtures("moto")
def test_twenty_five_parameters_cost_at_most_three_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    service, shared = identify(monkeypatch)
    for index in range(23):
        put(f"{service}/unused/p{index:02d}", str(index))
    put(f"{service}/database/host", "db.internal")
    put(f"{service}/api_key", KNOWN_SECRET, kind="SecureString")
    calls = ssm_calls()

    Settings.load()

    assert calls.count(service) <= 3
    assert calls.count(shared) == 1


@pytest.mark.usefixtures("moto")
def test_parameter_store_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    service, _ = identify(monkeypatch)
    put(f"{service}/workers", "8")
    monkeypatch.setenv("PARAMETER_STORE_ENABLED", "false")
    monkeypatch.setenv("DATABASE__HOST", "db.internal")
    monkeypatch.setenv("API_KEY", KNOWN_SECRET)
    calls = ssm_calls()

    assert Settings.load().workers == 1
    assert calls == []


@pytest.mark.usefixtures("moto")
def test_every_missing_setting_is_listed_with_where_it_was_looked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, shared = identify(monkeypatch)
    put(f"{service}/database/pool_size", "3")

    error = load_error(Settings)

    assert error.problems == [
        "database.host: missing; looked for environment variable DATABASE__HOST, "
        f"SSM parameter {service}/database/host, SSM parameter {shared}/database/host",
        "api_key: missing; looked for environment variable API_KEY, "
        f"SSM parameter {service}/api_key, SSM parameter {shared}/api_key",
    ]


@pytest.mark.usefixtures("moto")
def test_in_development_the_dotenv_file_is_a_place_too(monkeypatch: pytest.MonkeyPatch) -> None:
    service, shared = identify(monkeypatch, "development")
    monkeypatch.setenv("DATABASE__HOST", "db.internal")

    (problem,) = load_error(Settings).problems

    assert problem == (
        "api_key: missing; looked for environment variable API_KEY, API_KEY in the .env file, "
        f"SSM parameter {service}/api_key, SSM parameter {shared}/api_key"
    )


@pytest.mark.usefixtures("moto")
def test_without_a_name_no_parameter_is_read_and_the_error_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = ssm_calls()

    error = load_error(Settings)

    assert calls == []
    assert error.problems == [
        "app_name: missing; looked for environment variable APP_NAME, APP_NAME in the .env file",
        "service_name: missing; looked for environment variable SERVICE_NAME, "
        "SERVICE_NAME in the .env file",
        "database: missing; looked for environment variable DATABASE, DATABASE in the .env file",
        "api_key: missing; looked for environment variable API_KEY, API_KEY in the .env file",
    ]


@pytest.mark.usefixtures("moto")
def test_an_invalid_value_names_the_field_and_its_origin_not_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, shared = identify(monkeypatch)
    put(f"{service}/workers", "not-a-number-7a1")
    put(f"{shared}/database/pool-size", "huge-pool-5e3")
    put(f"{shared}/database/host", "db.internal")
    monkeypatch.setenv("DEBUG", "maybe-so-41c")
    monkeypatch.setenv("API_KEY", KNOWN_SECRET)

    error = load_error(Settings)

    assert sorted(error.problems) == [
        "database.pool_size: Input should be a valid integer, unable to parse string as an "
        f"integer (from SSM parameter {shared}/database/pool-size)",
        "debug: Input should be a valid boolean, unable to interpret input "
        "(from environment variable DEBUG)",
        "workers: Input should be a valid integer, unable to parse string as an integer "
        f"(from SSM parameter {service}/workers)",
    ]
    for value in ("not-a-number-7a1", "huge-pool-5e3", "maybe-so-41c", KNOWN_SECRET):
        assert value not in str(error)


@pytest.mark.usefixtures("moto")
def test_an_init_argument_is_named_as_the_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    identify(monkeypatch)
    monkeypatch.setenv("DATABASE__HOST", "db.internal")

    error = load_error(Settings, api_key=KNOWN_SECRET, workers="x")

    assert error.problems == [
        "workers: Input should be a valid integer, unable to parse string as an integer "
        "(from init argument workers)"
    ]


@pytest.mark.usefixtures("moto")
def test_json_that_does_not_parse_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    identify(monkeypatch)
    monkeypatch.setenv("DATABASE", "{not json")

    (problem,) = load_error(Settings).problems

    assert problem == 'error parsing value for field "database" from source "EnvSettingsSource"'


def test_an_unreachable_parameter_store_fails_the_load(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, shared = identify(monkeypatch)

    with moto.outage():
        error = load_error(Settings)

    assert len(error.problems) == 2
    assert service in error.problems[1]
    assert shared in error.problems[0]


@pytest.mark.usefixtures("moto")
def test_a_secret_ref_resolves_an_rds_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    identify(monkeypatch)
    secret_id = create_secret(rds_secret())
    monkeypatch.setenv("DB_SECRET", secret_id)

    settings = SecretSettings.load()

    assert settings.db_secret.secret_id == secret_id
    database = settings.db_secret.get()
    assert isinstance(database, RdsSecret)
    assert (database.host, database.port, database.username, database.dbname) == (
        "db.internal",
        5432,
        "app",
        "jobs",
    )
    assert database.password.get_secret_value() == KNOWN_SECRET
    assert settings.db_secret.refresh() == database
    assert settings.token is None
    assert settings.model_dump()["db_secret"] == secret_id


@pytest.mark.usefixtures("moto")
def test_a_secret_id_can_come_from_parameter_store(monkeypatch: pytest.MonkeyPatch) -> None:
    service, _ = identify(monkeypatch)
    secret_id = create_secret(rds_secret())
    token_id = create_secret("t0ken-value-81d")
    put(f"{service}/db_secret", secret_id)
    put(f"{service}/token", token_id)

    settings = SecretSettings.load()

    assert settings.db_secret.get().host == "db.internal"
    assert settings.token is not None
    assert settings.token.get() == "t0ken-value-81d"


@pytest.mark.usefixtures("moto")
def test_a_missing_secret_fails_the_load_naming_its_id(monkeypatch: pytest.MonkeyPatch) -> None:
    service, _ = identify(monkeypatch)
    monkeypatch.setenv("DB_SECRET", "suite/test/no-such-secret")
    put(f"{service}/token", "suite/test/no-such-token")

    problems = load_error(SecretSettings).problems

    assert len(problems) == 2
    assert problems[0].startswith("db_secret: secret 'suite/test/no-such-secret' is unavailable:")
    assert "secretsmanager:GetSecretValue" in problems[0]
    assert problems[0].endswith("(id from environment variable DB_SECRET)")
    assert problems[1].startswith("token: secret 'suite/test/no-such-token' is unavailable:")
    assert problems[1].endswith(f"(id from SSM parameter {service}/token)")


@pytest.mark.usefixtures("moto")
def test_a_secret_that_is_not_the_model_fails_without_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    identify(monkeypatch)
    broken = rds_secret()
    del broken["host"]
    secret_id = create_secret(broken)
    monkeypatch.setenv("DB_SECRET", secret_id)

    (problem,) = load_error(SecretSettings).problems

    assert problem.startswith(f"db_secret: secret {secret_id!r} is unavailable:")
    assert "host" in problem
    assert KNOWN_SECRET not in problem


@pytest.mark.usefixtures("moto")
def test_a_missing_secret_id_is_looked_for_in_env_and_parameters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, shared = identify(monkeypatch)

    assert load_error(SecretSettings).problems == [
        "db_secret: missing; looked for environment variable DB_SECRET, "
        f"SSM parameter {service}/db_secret, SSM parameter {shared}/db_secret"
    ]


@pytest.mark.usefixtures("moto")
def test_placeholder_secrets_are_refused_outside_development(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, _ = identify(monkeypatch, "production")
    db_secret = create_secret(rds_secret(password="changeme"))
    token = create_secret("ChangeThis")
    monkeypatch.setenv("DB_SECRET", db_secret)
    put(f"{service}/token", token)

    assert load_error(SecretSettings).problems == [
        "db_secret.password: a placeholder secret is refused outside development "
        f"(secret {db_secret!r})",
        f"token: a placeholder secret is refused outside development (secret {token!r})",
    ]


@pytest.mark.usefixtures("moto")
@pytest.mark.parametrize("password", ["app-local-only", "postgres-local-only", "Other-Local-Only"])
def test_docker_composes_local_passwords_are_refused_outside_development(
    monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    identify(monkeypatch, "production")
    db_secret = create_secret(rds_secret(password=password))
    monkeypatch.setenv("DB_SECRET", db_secret)

    assert load_error(SecretSettings).problems == [
        "db_secret.password: a placeholder secret is refused outside development "
        f"(secret {db_secret!r})"
    ]
    identify(monkeypatch, "development")
    assert SecretSettings.load().db_secret.get().password.get_secret_value() == password


@pytest.mark.usefixtures("moto")
def test_a_placeholder_setting_is_refused_naming_where_it_came_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, _ = identify(monkeypatch, "production")
    monkeypatch.setenv("DATABASE__HOST", "db.internal")
    put(f"{service}/api_key", "changeme", kind="SecureString")

    assert load_error(Settings).problems == [
        "api_key: a placeholder secret is refused outside development "
        f"(SSM parameter {service}/api_key)"
    ]


@pytest.mark.usefixtures("moto")
def test_placeholders_only_warn_in_development(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    identify(monkeypatch, "development")
    monkeypatch.setenv("DATABASE__HOST", "db.internal")
    monkeypatch.setenv("API_KEY", "changeme")

    with caplog.at_level(logging.WARNING, logger="servicekit.settings"):
        settings = Settings.load()

    assert settings.api_key.get_secret_value() == "changeme"
    assert [record.getMessage() for record in caplog.records] == [
        "api_key holds a placeholder secret (environment variable API_KEY)"
    ]


@pytest.mark.usefixtures("moto")
def test_no_secret_value_in_a_repr_a_dump_or_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    service, _ = identify(monkeypatch)
    secret_id = create_secret(rds_secret())
    monkeypatch.setenv("DB_SECRET", secret_id)
    put(f"{service}/api_key", KNOWN_SECRET, kind="SecureString")
    monkeypatch.setenv("DATABASE__HOST", "db.internal")
    settings = Settings.load()
    secrets = SecretSettings.load()

    texts = [
        str(settings),
        repr(settings),
        settings.model_dump_json(),
        str(secrets),
        repr(secrets),
        secrets.model_dump_json(),
        repr(secrets.db_secret.get()),
    ]
    for text in texts:
        assert KNOWN_SECRET not in text
    assert repr(secrets.db_secret) == f"SecretRef({secret_id!r})"

    monkeypatch.setenv("WORKERS", KNOWN_SECRET)
    error = load_error(Settings)
    assert KNOWN_SECRET not in str(error)
    assert KNOWN_SECRET not in repr(error)
