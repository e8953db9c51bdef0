"""``/jobs`` in-process, against moto's SQS and a migrated PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from servicekit.testing import MotoServer, wait_until


@pytest.fixture
def demo_client(
    api_env: Any, monkeypatch: pytest.MonkeyPatch, bearer: Callable[..., dict[str, str]]
) -> Iterator[TestClient]:
    """The app with the example types ``sleep`` and ``fail`` turned on."""
    monkeypatch.setenv("DEMO_JOB_TYPES", "true")
    with TestClient(create_app(), headers=bearer()) as test_client:
        yield test_client


def test_a_payload_is_validated_against_its_type_at_intake(
    demo_client: TestClient, api_env: Any
) -> None:
    response = demo_client.post("/jobs", json={"type": "sleep", "payload": {"seconds": -1}})

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["message"] == "invalid request: body.payload.seconds"
    assert [(d["field"], d["type"]) for d in error["details"]] == [
        ("body.payload.seconds", "greater_than_equal")
    ]
    for payload, field in [
        ({}, "body.payload.seconds"),
        ({"seconds": 1, "sconds": 2}, "body.payload.sconds"),
    ]:
        answer = demo_client.post("/jobs", json={"type": "sleep", "payload": payload})
        assert [d["field"] for d in answer.json()["error"]["details"]] == [field]
    assert demo_client.get("/jobs").json()["items"] == []
    assert api_env.queued_messages() == []

    accepted = demo_client.post("/jobs", json={"type": "sleep", "payload": {"seconds": 2}})
    assert accepted.status_code == 201
    assert accepted.json()["payload"] == {"seconds": 2}


def test_the_demo_types_are_unknown_unless_turned_on(client: TestClient, api_env: Any) -> None:
    # APP_ENV is "test" here: not development, and DEMO_JOB_TYPES is not set.
    for job_type, payload in (("sleep", {"seconds": 1}), ("fail", {})):
        response = client.post("/jobs", json={"type": job_type, "payload": payload})
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["details"] == [
            {
                "field": "body.type",
                "message": f"unknown job type {job_type!r}",
                "type": "unknown_job_type",
            }
        ]
    assert client.get("/jobs").json()["items"] == []


def enqueued(client: TestClient, job_id: str) -> dict[str, Any]:
    """The job once the outbox relay has sent its message."""
    wait_until(
        lambda: client.get(f"/jobs/{job_id}").json()["enqueued_at"] is not None,
        20,
        f"job {job_id}'s message to be sent",
        0.05,
    )
    job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
    return job


def test_a_job_is_stored_then_queued_by_the_relay(client: TestClient, api_env: Any) -> None:
    response = client.post("/jobs", json={"type": "echo", "payload": {"n": 1}})

    assert response.status_code == 201
    job = response.json()
    assert job["status"] == "queued"
    assert job["payload"] == {"n": 1}
    assert response.headers["location"] == f"/jobs/{job['id']}"
    sent = enqueued(client, job["id"])
    assert api_env.queued_messages() == [{"job_id": job["id"], "type": "echo"}]
    assert sent == job | {"enqueued_at": sent["enqueued_at"], "updated_at": sent["updated_at"]}


def test_a_retry_with_the_same_idempotency_key_returns_the_same_job(
    client: TestClient,
    api_env: Any,
) -> None:
    request = {"type": "echo", "payload": {"order": 7}}
    headers = {"Idempotency-Key": "order-7"}
    first = client.post("/jobs", json=request, headers=headers)
    again = client.post("/jobs", json=request, headers=headers)

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    enqueued(client, first.json()["id"])
    assert len(api_env.queued_messages()) == 1

    reused = client.post("/jobs", json={"type": "echo", "payload": {"order": 8}}, headers=headers)
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "idempotency_key_reused"


def test_a_job_accepted_while_sqs_is_down_is_sent_once_it_is_back(
    client: TestClient,
    api_env: Any,
    aws_env: MotoServer,
) -> None:
    with aws_env.outage():
        responses = [client.post("/jobs", json={"type": "echo", "payload": {}}) for _ in range(3)]
        assert [response.status_code for response in responses] == [201] * 3
        ids = [response.json()["id"] for response in responses]
        assert all(client.get(f"/jobs/{job_id}").json()["enqueued_at"] is None for job_id in ids)

    for job_id in ids:
        enqueued(client, job_id)
    assert sorted(body["job_id"] for body in api_env.queued_messages()) == sorted(ids)


def test_the_accept_jobs_flag_pauses_intake(
    client: TestClient,
    api_env: Any,
) -> None:
    api_env.set_parameter("flags/accept_jobs", "false")

    wait_until(lambda: client.post("/jobs", json={"type": "echo"}).status_code == 503, 10)
    response = client.post("/jobs", json={"type": "echo"})
    assert response.json()["error"]["code"] == "intake_paused"
    assert response.headers["retry-after"] == "5"
    assert client.get("/jobs").status_code == 200

    api_env.set_parameter("flags/accept_jobs", "true")
    wait_until(lambda: client.post("/jobs", json={"type": "echo"}).status_code == 201, 10)


def test_an_unknown_job_is_404(client: TestClient) -> None:
    response = client.get(f"/jobs/{uuid4()}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "job_not_found"


def test_jobs_are_listed_newest_first_one_page_at_a_time(client: TestClient) -> None:
    created = [
        client.post("/jobs", json={"type": "echo", "payload": {"i": i}}).json() for i in range(5)
    ]

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/jobs", params=params).json()
        seen += [job["id"] for job in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [job["id"] for job in reversed(created)]

    assert len(client.get("/jobs", params={"status": "queued"}).json()["items"]) == 5
    assert client.get("/jobs", params={"status": "succeeded"}).json()["items"] == []


def test_a_cursor_is_accepted_exactly_when_it_has_the_documented_form(
    client: TestClient,
) -> None:
    job = client.post("/jobs", json={"type": "echo"}).json()
    documented = client.get("/openapi.json").json()["paths"]["/jobs"]["get"]["parameters"]
    pattern = next(p for p in documented if p["name"] == "cursor")["schema"]["anyOf"][0]["pattern"]

    # Any string of the form is a position: before every job, after every job.
    for cursor, ids in (("0" * 48, []), ("9" * 16 + "f" * 32, [job["id"]])):
        assert re.fullmatch(pattern, cursor)
        page = client.get("/jobs", params={"cursor": cursor})
        assert page.status_code == 200, page.text
        assert [item["id"] for item in page.json()["items"]] == ids
    for cursor in ("not-a-cursor", "0" * 47):
        assert not re.fullmatch(pattern, cursor)
        response = client.get("/jobs", params={"cursor": cursor})
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["field"] == "query.cursor"


def test_links_lead_from_a_created_job_to_reading_it_and_from_a_page_to_the_next(
    client: TestClient,
) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    create_links = paths["/jobs"]["post"]["responses"]["201"]["links"]
    assert create_links["GetJob"]["operationId"] == paths["/jobs/{job_id}"]["get"]["operationId"]
    page_links = paths["/jobs"]["get"]["responses"]["200"]["links"]
    assert page_links["NextPage"]["operationId"] == paths["/jobs"]["get"]["operationId"]

    # Following them as written: $response.body#/id and #/next_cursor.
    created = client.post("/jobs", json={"type": "echo"}).json()
    client.post("/jobs", json={"type": "echo"})
    assert client.get(f"/jobs/{created['id']}").json()["id"] == created["id"]
    first = client.get("/jobs", params={"limit": 1}).json()
    second = client.get("/jobs", params={"limit": 1, "cursor": first["next_cursor"]}).json()
    assert [item["id"] for item in second["items"]] == [created["id"]]
