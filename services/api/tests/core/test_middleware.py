"""The ASGI layers in-process: health shortcut, request and trace ids, access log, body limit."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.main import create_app
from servicekit.logging import JsonFormatter

TRACE_ROOT = "1-67891233-abcdef012345678912345678"


@pytest.fixture
def access_log() -> Iterator[io.StringIO]:
    """The api.access lines of the test, as the production formatter writes them."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter(service="api", env="test"))
    logger = logging.getLogger("api.access")
    logger.addHandler(handler)
    yield buffer
    logger.removeHandler(handler)


def _lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_request_id_is_generated_returned_and_logged(
    client: TestClient, access_log: io.StringIO
) -> None:
    response = client.get("/jobs")

    request_id = response.headers["x-request-id"]
    assert len(request_id) == 32
    [line] = _lines(access_log)
    assert line["request_id"] == request_id
    assert (line["http_method"], line["http_path"], line["http_status"]) == ("GET", "/jobs", 200)
    assert "x-amzn-trace-id" not in response.headers


def test_the_callers_ids_are_kept(client: TestClient, access_log: io.StringIO) -> None:
    response = client.get(
        "/jobs",
        headers={
            "X-Request-ID": "req-42",
            "X-Amzn-Trace-Id": f"Self=1-00000000-{'0' * 24};Root={TRACE_ROOT};Sampled=1",
        },
    )

    assert response.headers["x-request-id"] == "req-42"
    assert response.headers["x-amzn-trace-id"] == f"Root={TRACE_ROOT}"
    [line] = _lines(access_log)
    assert (line["request_id"], line["trace_id"]) == ("req-42", TRACE_ROOT)


def test_an_unsafe_request_id_is_replaced(client: TestClient) -> None:
    response = client.get("/jobs", headers={"X-Request-ID": "a b\tc" + "x" * 200})
    assert response.headers["x-request-id"] != "a b\tc" + "x" * 200


def test_health_checks_are_not_logged(client: TestClient, access_log: io.StringIO) -> None:
    assert client.get("/health").status_code == 200
    assert access_log.getvalue() == ""


def test_an_unhandled_error_is_a_500_in_the_error_shape(
    api_env: Any, access_log: io.StringIO
) -> None:
    app = create_app()

    def boom() -> None:
        raise RuntimeError("secret detail that must not reach the client")

    # Registered on this test's app only: nothing like it exists in the service.
    cast(FastAPI, app.app).add_api_route("/boom", boom)
    with TestClient(app) as client:
        response = client.get("/boom", headers={"X-Request-ID": "req-500"})

    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "code": "internal_error",
            "message": "internal server error",
            "details": [],
            "request_id": "req-500",
        }
    }
    assert response.headers["x-request-id"] == "req-500"
    [line] = _lines(access_log)
    assert line["http_status"] == 500


def test_a_declared_body_over_the_limit_is_refused_unread(client: TestClient) -> None:
    body = json.dumps({"type": "echo", "payload": {"blob": "x" * 70_000}})
    response = client.post("/jobs", content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "content_too_large"
    assert response.headers["x-request-id"]


def test_a_body_without_length_is_counted(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"type": "echo", "payload": {"blob": "'
        yield b"x" * 100_000
        yield b'"}}'

    response = client.post("/jobs", content=chunks(), headers={"Content-Type": "application/json"})

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "content_too_large"
