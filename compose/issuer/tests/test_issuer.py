"""The local issuer answers like Cognito: its tokens verify against its own JWKS and discovery."""

from __future__ import annotations

import jwt
import pytest
from starlette.testclient import TestClient

from issuer import Issuer, IssuerConfig

URL = "http://issuer.test"


@pytest.fixture
def issuer() -> Issuer:
    return Issuer(IssuerConfig(url=URL, client_id="app", client_secret="s3cret"))


@pytest.fixture
def client(issuer: Issuer) -> TestClient:
    return TestClient(issuer.app())


def _verify(client: TestClient, token: str) -> dict[str, object]:
    jwks = jwt.PyJWKSet.from_dict(client.get("/.well-known/jwks.json").json())
    key = jwks[jwt.get_unverified_header(token)["kid"]]
    return jwt.decode(token, key, algorithms=["RS256"], issuer=URL)


def test_discovery_names_the_jwks_and_the_token_endpoint(client: TestClient) -> None:
    document = client.get("/.well-known/openid-configuration").json()
    assert document["issuer"] == URL
    assert document["jwks_uri"] == f"{URL}/.well-known/jwks.json"
    assert document["token_endpoint"] == f"{URL}/oauth2/token"


@pytest.mark.parametrize("client_auth", ["basic", "post"])
def test_client_credentials_give_a_cognito_shaped_access_token(
    client: TestClient, client_auth: str
) -> None:
    form = {"grant_type": "client_credentials", "scope": "jobs:read"}
    if client_auth == "basic":
        response = client.post("/oauth2/token", data=form, auth=("app", "s3cret"))
    else:
        response = client.post(
            "/oauth2/token", data=form | {"client_id": "app", "client_secret": "s3cret"}
        )
    assert response.status_code == 200
    answer = response.json()
    assert answer["token_type"] == "Bearer"
    claims = _verify(client, answer["access_token"])
    assert claims["sub"] == claims["client_id"] == "app"
    assert claims["token_use"] == "access"
    assert claims["scope"] == "jobs:read"
    assert {"exp", "iat", "jti", "auth_time"} <= set(claims)
    assert "aud" not in claims  # Cognito's access tokens name the client in client_id only


@pytest.mark.parametrize(
    ("form", "auth", "status", "error"),
    [
        ({"grant_type": "client_credentials"}, ("app", "wrong"), 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, None, 401, "invalid_client"),
        ({"grant_type": "password"}, ("app", "s3cret"), 400, "unsupported_grant_type"),
        (
            {"grant_type": "client_credentials", "scope": "jobs:admin"},
            ("app", "s3cret"),
            400,
            "invalid_scope",
        ),
    ],
)
def test_token_requests_are_refused_per_rfc_6749(
    client: TestClient,
    form: dict[str, str],
    auth: tuple[str, str] | None,
    status: int,
    error: str,
) -> None:
    response = client.post("/oauth2/token", data=form, auth=auth)
    assert (response.status_code, response.json()) == (status, {"error": error})


def test_a_rotation_signs_with_a_new_key_and_keeps_the_previous_one(
    client: TestClient, issuer: Issuer
) -> None:
    before = client.post("/dev/token", json={"principal": "alice"}).json()["access_token"]
    kid = client.post("/dev/rotate").json()["kid"]
    after = client.post("/dev/token", json={"principal": "alice"}).json()["access_token"]

    assert jwt.get_unverified_header(after)["kid"] == kid
    assert _verify(client, before)["sub"] == _verify(client, after)["sub"] == "alice"
    client.post("/dev/rotate")
    with pytest.raises(KeyError):
        _verify(client, before)  # two rotations on, its key is no longer published


def test_a_malformed_dev_token_request_is_400(client: TestClient) -> None:
    assert client.post("/dev/token", json={"scopes": ["jobs:read"]}).status_code == 400
    assert client.post("/dev/token", content=b"{").status_code == 400
    wrong_type = {"principal": "alice", "lifetime": "soon"}
    assert client.post("/dev/token", json=wrong_type).status_code == 400
