"""The application factory and its lifespan."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from api.main import create_app
from jobs.types import JOB_TYPES
from servicekit.errors import ConfigurationError


def test_importing_the_app_builds_nothing() -> None:
    # A clean interpreter with no settings at all: the import must not need them, nor call AWS.
    # gunicorn's master imports the app before forking the workers (preload_app): a thread
    # started here would not exist in them, and a client's connections would be shared.
    code = (
        "import threading\n"
        "import api.main\n"
        "from servicekit import aws, secrets\n"
        "assert aws._clients == {} and secrets._default is None\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
    )
    environ = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME")}
    subprocess.run([sys.executable, "-c", code], env=environ, check=True, timeout=60)


def test_a_worker_without_its_settings_does_not_start(
    api_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QUEUE_URL")
    with pytest.raises(ConfigurationError) as raised, TestClient(create_app()):
        pass
    assert "queue_url: missing" in str(raised.value)
    assert "environment variable QUEUE_URL" in str(raised.value)
    assert "SSM parameter /suite/test/api/queue_url" in str(raised.value)


def test_the_openapi_schema_documents_every_route_and_the_error_shape(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()

    assert set(schema["paths"]) == {"/health", "/ready", "/jobs", "/jobs/{job_id}", "/ops/workers"}
    create = schema["paths"]["/jobs"]["post"]
    assert {"200", "201", "409", "413", "422", "503", "500"} <= set(create["responses"])
    error = create["responses"]["422"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/ErrorResponse"}
    # The request body is the registry's union, discriminated by type, each with its payload.
    components = schema["components"]["schemas"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/JobCreate"}
    mapping = components["JobCreate"]["discriminator"]["mapping"]
    assert set(mapping) == {job_type.name for job_type in JOB_TYPES}
    sleep = components[mapping["sleep"].rsplit("/", 1)[1]]
    payload = components[sleep["properties"]["payload"]["$ref"].rsplit("/", 1)[1]]
    assert payload["properties"]["seconds"]["minimum"] == 0
    assert payload["required"] == ["seconds"]
    # The Authorize button: a bearer scheme, required by every /jobs and /ops operation only,
    # with the scope each needs (OpenAPI 3.1 lets a non-OAuth scheme list them).
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    secured = {
        (path, method): operation["security"]
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if "security" in operation
    }
    assert secured == {
        ("/jobs", "get"): [{"HTTPBearer": ["jobs:read"]}],
        ("/jobs", "post"): [{"HTTPBearer": ["jobs:write"]}],
        ("/jobs/{job_id}", "get"): [{"HTTPBearer": ["jobs:read"]}],
        ("/ops/workers", "get"): [{"HTTPBearer": ["jobs:admin"]}],
    }
    assert {"401", "403"} <= set(create["responses"])
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            # Answered before any route runs (413) or by the last-resort handler (500).
            assert {"413", "500"} <= set(operation["responses"]), (path, method)
            if path.startswith("/jobs"):
                assert {"401", "403", "422"} <= set(operation["responses"]), (path, method)
    assert "swagger-ui" in client.get("/docs").text
    assert client.get("/redoc").status_code == 200


@pytest.mark.parametrize("environ", [{"DOCS_ENABLED": "false"}, {"APP_ENV": "production"}])
def test_docs_can_be_turned_off_and_are_off_outside_development(
    api_env: Any, monkeypatch: pytest.MonkeyPatch, environ: dict[str, str]
) -> None:
    if "APP_ENV" in environ:
        monkeypatch.delenv("DOCS_ENABLED")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with TestClient(create_app()) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "not_found"


def test_no_generated_request_gets_a_5xx(serve: Callable[..., Any], api_env: Any) -> None:
    server = serve()  # its requests carry a token: the routes behind authentication are reached
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    answered: Counter[int] = Counter()
    server_errors: list[str] = []

    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        operation = result.ok()
        inputs = [operation.path_parameters, operation.query, operation.headers, operation.body]
        # Negative cases need something to get wrong: /health and /ready take no input.
        modes = [GenerationMode.POSITIVE] + [GenerationMode.NEGATIVE] * any(map(len, inputs))
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=100,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def call(case: schemathesis.Case[Any]) -> None:
                response = case.call(base_url=server.url, headers=server.headers, timeout=10)
                answered[response.status_code] += 1
                if response.status_code >= 500:
                    server_errors.append(f"{case.as_curl_command()} -> {response.status_code}")

            call()

    assert server_errors == []
    assert answered.total() >= 500, answered
