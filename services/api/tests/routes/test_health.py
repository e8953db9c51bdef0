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


def test_ready_answers_ok(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_does_not_depend_on_sqs(client: TestClient, api_env: Any) -> None:
    # Jobs are accepted into the outbox while SQS is gone: no reason to take the task out.
    aws.client("sqs").delete_queue(QueueUrl=api_env.queue_url)
    assert client.get("/ready").json() == {"status": "ok"}
    assert client.post("/jobs", json={"type": "echo"}).status_code == 201
