"""Per-caller isolation through the API, with real tokens from the local issuer."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

Bearer = Callable[..., dict[str, str]]


def _post(client: TestClient, headers: dict[str, str], key: str | None = None) -> dict[str, str]:
    extra = {"Idempotency-Key": key} if key else {}
    response = client.post("/jobs", json={"type": "echo", "payload": {}}, headers=headers | extra)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _ids(client: TestClient, headers: dict[str, str]) -> set[str]:
    response = client.get("/jobs", params={"limit": 100}, headers=headers)
    assert response.status_code == 200, response.text
    return {job["id"] for job in response.json()["items"]}


def test_each_caller_sees_only_its_own_jobs(client: TestClient, bearer: Bearer) -> None:
    alice, bob = bearer("alice"), bearer("bob")
    alices, bobs = _post(client, alice), _post(client, bob)

    assert alices["owner"] == "alice"
    assert _ids(client, alice) == {alices["id"]}
    assert _ids(client, bob) == {bobs["id"]}
    # Another caller's job does not exist for you: 404, as for an id nobody has.
    assert client.get(f"/jobs/{bobs['id']}", headers=alice).status_code == 404
    assert client.get(f"/jobs/{alices['id']}", headers=alice).status_code == 200


def test_the_same_idempotency_key_from_two_callers_makes_two_jobs(
    client: TestClient, bearer: Bearer
) -> None:
    alices = _post(client, bearer("alice"), key="order-1")
    bobs = _post(client, bearer("bob"), key="order-1")

    assert alices["id"] != bobs["id"]
    assert (alices["owner"], bobs["owner"]) == ("alice", "bob")


def test_an_admin_sees_every_callers_jobs(client: TestClient, bearer: Bearer) -> None:
    alices, bobs = _post(client, bearer("alice")), _post(client, bearer("bob"))
    admin = bearer("operator", scopes=("jobs:admin",))

    assert {alices["id"], bobs["id"]} <= _ids(client, admin)
    assert client.get(f"/jobs/{bobs['id']}", headers=admin).json()["owner"] == "bob"
