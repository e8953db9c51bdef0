"""Bearer tokens on ``/jobs``: real tokens from the local issuer, served over HTTP on loopback."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from jwt.utils import base64url_encode

from api.core.config import AuthSettings
from api.core.security import InvalidToken, Principal, TokenVerifier
from api.main import create_app
from issuer import Issuer
from servicekit.testing import MotoServer, wait_until
from servicekit.testing.moto import free_port

Bearer = Callable[..., dict[str, str]]
INVALID = 'Bearer realm="jobs", error="invalid_token"'


def _claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def _tampered(issuer: Issuer) -> str:
    """alice's token with bob's name: the signature no longer matches the claims."""
    header, _, signature = issuer.mint("alice", ["jobs:read"]).split(".")
    payload = base64url_encode(json.dumps(_claims(issuer.mint("bob", ["jobs:read"]))).encode())
    return f"{header}.{payload.decode()}.{signature}"


def _unsigned(issuer: Issuer) -> str:
    token = issuer.mint("alice", ["jobs:read"])
    kid = jwt.get_unverified_header(token)["kid"]
    return jwt.encode(_claims(token), None, algorithm="none", headers={"kid": kid})


def _hmac(issuer: Issuer) -> str:
    token = issuer.mint("alice", ["jobs:read"])
    kid = jwt.get_unverified_header(token)["kid"]
    return jwt.encode(_claims(token), "a" * 32, algorithm="HS256", headers={"kid": kid})


BAD_TOKENS: dict[str, Callable[[Issuer], str]] = {
    "expired": lambda issuer: issuer.mint("alice", ["jobs:read"], lifetime=-120),
    "not yet valid": lambda issuer: issuer.mint("alice", ["jobs:read"], not_before_in=120),
    "wrong issuer": lambda issuer: replace(
        issuer, config=replace(issuer.config, url="https://elsewhere.example")
    ).mint("alice", ["jobs:read"]),
    "another app client": lambda issuer: issuer.mint("alice", ["jobs:read"], client_id="other"),
    "an id token": lambda issuer: issuer.mint("alice", ["jobs:read"], token_use="id"),
    "tampered": _tampered,
    "alg none": _unsigned,
    "alg HS256": _hmac,
    "not a JWT": lambda _: "not-a-jwt",
}


@pytest.fixture
def anonymous(client: TestClient) -> TestClient:
    """``client`` without its token."""
    del client.headers["Authorization"]
    return client


@pytest.fixture
def start_app(api_env: Any) -> Iterator[Callable[[], TestClient]]:
    """Another app, for a test that set its own environment first."""
    started: list[TestClient] = []

    def start() -> TestClient:
        started.append(TestClient(create_app()).__enter__())
        return started[-1]

    yield start
    for test_client in started:
        test_client.__exit__(None, None, None)


def test_no_token_is_401_with_the_bearer_challenge(anonymous: TestClient) -> None:
    for response in (
        anonymous.get("/jobs"),
        anonymous.post("/jobs", json={"type": "echo"}),
        anonymous.get("/jobs", headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"}),
    ):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="jobs"'
        assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("body", [b'{"type": ', b"\xff\xfe", b"not json"])
def test_the_caller_is_checked_before_the_body_is_parsed(
    anonymous: TestClient, bearer: Bearer, body: bytes
) -> None:
    # FastAPI parses the body before any dependency runs: without AuthenticatedRoute these
    # were 422 (or 400) to anyone.
    json_headers = {"Content-Type": "application/json"}
    no_token = anonymous.post("/jobs", content=body, headers=json_headers)
    assert no_token.status_code == 401
    assert no_token.headers["www-authenticate"] == 'Bearer realm="jobs"'
    reader = anonymous.post(
        "/jobs", content=body, headers=json_headers | bearer(scopes=["jobs:read"])
    )
    assert reader.status_code == 403
    writer = anonymous.post("/jobs", content=body, headers=json_headers | bearer())
    assert writer.status_code == 422
    assert writer.json()["error"]["details"][0]["type"] == "json_invalid"


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_a_bad_token_is_401_without_saying_why(
    anonymous: TestClient, issuer: Issuer, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = BAD_TOKENS[kind](issuer)
    with caplog.at_level(logging.INFO, logger="api.deps"):
        response = anonymous.get("/jobs", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == INVALID
    error = response.json()["error"]
    assert (error["code"], error["message"]) == ("invalid_token", "the bearer token is not valid")
    assert any("bearer token refused" in record.getMessage() for record in caplog.records)


def test_a_valid_token_passes(anonymous: TestClient, bearer: Bearer) -> None:
    # The control of the test above: the same issuer and client, nothing wrong.
    response = anonymous.get("/jobs", headers=bearer(scopes=["jobs:read"]))
    assert response.status_code == 200


def test_a_token_without_the_routes_scope_is_403(anonymous: TestClient, bearer: Bearer) -> None:
    reader, writer = bearer(scopes=["jobs:read"]), bearer(scopes=["jobs:write"])

    refused = anonymous.post("/jobs", json={"type": "echo"}, headers=reader)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"
    assert refused.headers["www-authenticate"] == (
        'Bearer realm="jobs", error="insufficient_scope", scope="jobs:write"'
    )
    assert anonymous.get("/jobs", headers=reader).status_code == 200

    created = anonymous.post("/jobs", json={"type": "echo"}, headers=writer)
    assert created.status_code == 201
    assert anonymous.get(f"/jobs/{created.json()['id']}", headers=writer).status_code == 403
    assert anonymous.get("/jobs", headers=writer).status_code == 403


def test_the_admin_scope_implies_read_and_write(
    anonymous: TestClient, bearer: Bearer, caplog: pytest.LogCaptureFixture
) -> None:
    admin = bearer(principal="ops", scopes=["jobs:admin"])
    with caplog.at_level(logging.INFO, logger="api.routes.jobs"):
        created = anonymous.post("/jobs", json={"type": "echo"}, headers=admin)
    assert created.status_code == 201
    assert anonymous.get(f"/jobs/{created.json()['id']}", headers=admin).status_code == 200
    accepted = [record for record in caplog.records if "accepted" in record.getMessage()]
    assert [record.principal for record in accepted] == ["ops"]  # type: ignore[attr-defined]


def test_scopes_count_only_with_the_issuers_prefix(
    start_app: Callable[[], TestClient], bearer: Bearer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cognito names a custom scope {resource server}/{scope}.
    monkeypatch.setenv("AUTH__SCOPE_PREFIX", "https://jobs.example/")
    app = start_app()

    assert app.get("/jobs", headers=bearer(scopes=["jobs:read"])).status_code == 403
    prefixed = bearer(scopes=["https://jobs.example/jobs:read"])
    assert app.get("/jobs", headers=prefixed).status_code == 200
    refused = app.post("/jobs", json={"type": "echo"}, headers=prefixed)
    assert 'scope="https://jobs.example/jobs:write"' in refused.headers["www-authenticate"]


def test_a_rotated_key_is_fetched_once_it_signs(
    start_app: Callable[[], TestClient],
    issuer: Issuer,
    bearer: Bearer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTH__JWKS_REFETCH_SECONDS", "0.5")
    app = start_app()
    before = bearer()
    assert app.get("/jobs", headers=before).status_code == 200

    kid = issuer.rotate()
    after = bearer()
    assert jwt.get_unverified_header(after["Authorization"].removeprefix("Bearer "))["kid"] == kid
    # At most one fetch per 0.5 s: the new key is picked up within it.
    wait_until(lambda: app.get("/jobs", headers=after).status_code == 200, 5, "the new key")
    assert app.get("/jobs", headers=before).status_code == 200  # still published


def test_made_up_key_ids_cost_at_most_one_fetch_per_period(
    start_app: Callable[[], TestClient], issuer: Issuer, bearer: Bearer
) -> None:
    app = start_app()  # the default period: 30 s
    assert app.get("/jobs", headers=bearer()).status_code == 200
    fetched = issuer.jwks_served

    made_up = Issuer(issuer.config)  # same claims, a key the issuer never published
    token = made_up.mint("alice", ["jobs:read"])
    responses = [app.get("/jobs", headers={"Authorization": f"Bearer {token}"}) for _ in range(20)]

    assert {response.status_code for response in responses} == {401}
    assert issuer.jwks_served - fetched <= 1


def test_an_unreachable_issuer_is_503_not_401(
    start_app: Callable[[], TestClient],
    bearer: Bearer,
    monkeypatch: pytest.MonkeyPatch,
    aws_env: MotoServer,
) -> None:
    monkeypatch.setenv("AUTH__JWKS_URL", f"http://127.0.0.1:{free_port()}/jwks.json")
    app = start_app()
    response = app.get("/jobs", headers=bearer())
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "dependency_unavailable"
    assert "retry-after" in response.headers


def test_health_and_ready_need_no_token(anonymous: TestClient) -> None:
    assert anonymous.get("/health").status_code == 200
    assert anonymous.get("/ready").json() == {"status": "ok"}


def _verifier(issuer: Issuer, *, remember: int = 1024) -> TokenVerifier:
    settings = AuthSettings(
        issuer=issuer.config.url, audiences=frozenset({issuer.config.client_id})
    )
    return TokenVerifier(settings, remember=remember)


def test_a_verified_token_is_remembered_and_only_that_token(issuer: Issuer) -> None:
    verifier = _verifier(issuer)
    token = issuer.mint("alice", ["jobs:read"])
    assert verifier.remembered(token) is None

    principal = verifier.verify(token)
    assert verifier.remembered(token) == principal == Principal("alice", frozenset({"jobs:read"}))
    # Another good token, and the same claims under another signature, are not.
    assert verifier.remembered(issuer.mint("alice", ["jobs:read"])) is None
    tampered = _tampered(issuer)
    assert verifier.remembered(tampered) is None
    with pytest.raises(InvalidToken):
        verifier.verify(tampered)
    assert verifier.remembered(tampered) is None


def test_the_least_recently_used_token_is_forgotten_first(issuer: Issuer) -> None:
    verifier = _verifier(issuer, remember=2)
    first, second, third = (issuer.mint(name, ["jobs:read"]) for name in ("a", "b", "c"))
    verifier.verify(first)
    verifier.verify(second)
    assert verifier.remembered(first) is not None  # used: now the most recent
    verifier.verify(third)

    assert verifier.remembered(second) is None
    assert verifier.remembered(first) is not None
    assert verifier.remembered(third) is not None


def test_a_remembered_token_is_refused_once_it_expires(
    start_app: Callable[[], TestClient], issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTH__LEEWAY_SECONDS", "0")
    app = start_app()
    token = issuer.mint("alice", ["jobs:read"], lifetime=2)
    headers = {"Authorization": f"Bearer {token}"}
    assert app.get("/jobs", headers=headers).status_code == 200
    assert app.get("/jobs", headers=headers).status_code == 200  # from memory

    wait_until(lambda: app.get("/jobs", headers=headers).status_code == 401, 10, "expiry")
    assert time.time() > _claims(token)["exp"]
    # The scopes are still the route's business on every request: remembered, not widened.
    writer = {"Authorization": f"Bearer {issuer.mint('alice', ['jobs:read'])}"}
    assert app.get("/jobs", headers=writer).status_code == 200
    assert app.post("/jobs", json={"type": "echo"}, headers=writer).status_code == 403
