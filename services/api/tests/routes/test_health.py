"""``/health`` and ``/ready`` in-process."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from servicekit import aws
from servicekit.testing import MotoServer


def test_health_answers_without_touching_dependencies(
    client: TestClient, aws_env: MotoServer
) -> None:
    with aws_env.outage():
        response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert client.head("/health").status_code == 200


def test_health_refuses_other_methods_in_the_error_shape(client: TestClient) -> None:
    response = client.post("/health")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_ready_answers_ok(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_logs_the_failing_check_and_answers_only_fail(
    client: TestClient, api_env: Any, caplog: pytest.LogCaptureFixture
) -> None:
    aws.client("sqs").delete_queue(QueueUrl=api_env.queue_url)
    with caplog.at_level(logging.WARNING, logger="servicekit.health"):
        response = client.get("/ready")
    assert response.status_code == 503
    assert response.json() == {"status": "fail"}
    logged = [record.getMessage() for record in caplog.records]
    assert any(
        "readiness check sqs failing" in line
        and ("QueueDoesNotExist" in line or "NonExistentQueue" in line)
        for line in logged
    ), logged
    assert not any("database failing" in line for line in logged)
