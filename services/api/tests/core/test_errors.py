"""Every error in one shape: ``{"error": {"code", "message", "details", "request_id"}}``."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        ({"type": "no-such-type"}, "body.type"),
        ({"payload": {}}, "body.type"),
        ({"type": "echo", "payload": [1, 2]}, "body.payload"),
        ({"type": "echo", "priority": 1}, "body.priority"),
        ({"type": "echo", "payload": {"a": "\u0000"}}, "body.payload"),
    ],
)
def test_422_names_the_field(client: TestClient, request_body: object, field: str) -> None:
    response = client.post("/jobs", json=request_body, headers={"X-Request-ID": "req-422"})

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["request_id"] == "req-422"
    assert [detail["field"] for detail in error["details"]] == [field]
    assert field in error["message"]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/jobs/not-a-uuid", "path.job_id"),
        ("/jobs?limit=0", "query.limit"),
        ("/jobs?status=x", "query.status"),
    ],
)
def test_422_names_the_parameter(client: TestClient, path: str, field: str) -> None:
    response = client.get(path)
    assert response.status_code == 422
    assert [detail["field"] for detail in response.json()["error"]["details"]] == [field]


@pytest.mark.parametrize(
    "payload",
    [
        b'{"a": "nul \\u0000"}',
        b'{"nul \\u0000 key": 1}',
        b'{"a": "\\ud800 alone"}',
        b'{"a": NaN}',
        b'{"a": 1e400}',
        b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}",
    ],
)
def test_a_payload_postgresql_cannot_store_is_a_422(client: TestClient, payload: bytes) -> None:
    # JSON parsing accepts all of these; the jsonb column would refuse them (a 500).
    body = b'{"type": "echo", "payload": ' + payload + b"}"
    response = client.post("/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert [detail["field"] for detail in response.json()["error"]["details"]] == ["body.payload"]


def test_malformed_json_is_a_422(client: TestClient) -> None:
    response = client.post(
        "/jobs", content=b'{"type": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["type"] == "json_invalid"


def test_an_unknown_path_is_a_404_in_the_error_shape(client: TestClient) -> None:
    response = client.get("/nowhere", headers={"X-Request-ID": "req-404"})
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "not_found",
            "message": "Not Found",
            "details": [],
            "request_id": "req-404",
        }
    }


def test_a_body_that_is_not_utf8_is_a_422_like_malformed_json(client: TestClient) -> None:
    # FastAPI's own answer would be an undocumented 400.
    response = client.post(
        "/jobs", content=b"\xff\xfe", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["type"] == "json_invalid"


def test_405_and_options_name_every_method_of_the_path(client: TestClient) -> None:
    # POST /jobs and GET /jobs are two routes: Starlette alone answers Allow: POST.
    refused = client.delete("/jobs", headers={"X-Request-ID": "req-405"})
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, OPTIONS, POST"
    assert refused.json()["error"]["code"] == "method_not_allowed"
    assert refused.json()["error"]["request_id"] == "req-405"

    options = client.options("/jobs")
    assert (options.status_code, options.headers["allow"]) == (204, "GET, OPTIONS, POST")
    assert client.options("/jobs/not-a-uuid").headers["allow"] == "GET, OPTIONS"
    assert client.put("/ready").headers["allow"] == "GET, OPTIONS"
    assert client.options("/nowhere").status_code == 404
