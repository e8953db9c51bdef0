"""``/health`` and ``/ready`` in-process."""

from __future__ import annotations

from typing import Any

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


def test_ready_reports_every_check(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "sqs": "ok"}}


def test_ready_names_the_failing_check(client: TestClient, api_env: Any) -> None:
    aws.client("sqs").delete_queue(QueueUrl=api_env.queue_url)
    response = client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["checks"]["database"] == "ok"
    assert (
        "QueueDoesNotExist" in body["checks"]["sqs"] or "NonExistentQueue" in body["checks"]["sqs"]
    )
