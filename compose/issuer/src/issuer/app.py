"""A local OAuth 2.0 issuer that answers like an Amazon Cognito user pool, for the local suite only.

What the API relies on, as Cognito serves it:

- ``GET /.well-known/openid-configuration`` and ``GET /.well-known/jwks.json`` (the pool's
  layout: the JWKS is ``{issuer}/.well-known/jwks.json``);
- ``POST /oauth2/token``: the client-credentials grant for the one configured app client
  (HTTP Basic or form client authentication, ``scope`` optional: all the client's scopes);
- access tokens signed RS256 with a ``kid`` header and Cognito's claims: ``iss``, ``sub``
  (the client id for client credentials), ``client_id``, ``token_use=access``, ``scope``
  (space-separated), ``auth_time``, ``iat``, ``exp``, ``jti``, ``version``.

And what Cognito has no equivalent for, for development and tests:

- ``POST /dev/token``: a token for a named principal with the given scopes; ``lifetime`` (may be
  negative: already expired), ``not_before_in`` (adds ``nbf``), ``client_id`` and ``token_use``
  override the defaults so tests can make every kind of bad token a real issuer could sign;
- ``POST /dev/rotate``: a new signing key; the previous one stays in the JWKS (tokens it signed
  stay valid until they expire), older ones are dropped.

moto's cognito-idp serves a JWKS from a fixed key but has no token endpoint and no rotation,
which is why this exists. Keys live in memory: a restart is a rotation.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["Issuer", "IssuerConfig"]

ALGORITHM = "RS256"
# The current key and the one before it: tokens signed just before a rotation stay verifiable.
KEYS_KEPT = 2
# What a /dev/token request may set besides principal and scopes, and its JSON type.
_DEV_OPTIONS: dict[str, type] = {
    "lifetime": int,
    "not_before_in": int,
    "client_id": str,
    "token_use": str,
}


@dataclass(frozen=True)
class IssuerConfig:
    """``url`` is the exact ``iss`` of every token: the issuer as the API reaches it."""

    url: str
    client_id: str = "local-client"
    client_secret: str = "local-secret"  # noqa: S105 - a local-only stand-in's fixed credential
    scopes: tuple[str, ...] = ("jobs:read", "jobs:write")
    lifetime: int = 3600


@dataclass(frozen=True)
class _Key:
    kid: str
    private: rsa.RSAPrivateKey

    @classmethod
    def generate(cls) -> _Key:
        return cls(
            secrets.token_hex(8), rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )

    def jwk(self) -> dict[str, Any]:
        public = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return public | {"kid": self.kid, "alg": ALGORITHM, "use": "sig"}


@dataclass
class Issuer:
    config: IssuerConfig
    jwks_served: int = 0  # how often the JWKS was fetched: tests check refetches are bounded
    _keys: list[_Key] = field(default_factory=lambda: [_Key.generate()])
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def rotate(self) -> str:
        """Sign with a new key from now on; returns its ``kid``."""
        key = _Key.generate()
        with self._lock:
            self._keys = [*self._keys, key][-KEYS_KEPT:]
        return key.kid

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            self.jwks_served += 1
            return {"keys": [key.jwk() for key in self._keys]}

    def mint(
        self,
        subject: str,
        scopes: list[str],
        *,
        lifetime: int | None = None,
        not_before_in: int | None = None,
        client_id: str | None = None,
        token_use: str = "access",  # noqa: S107 - a claim, not a password
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.config.url,
            "sub": subject,
            "client_id": client_id or self.config.client_id,
            "token_use": token_use,
            "scope": " ".join(scopes),
            "auth_time": now,
            "iat": now,
            "exp": now + (self.config.lifetime if lifetime is None else lifetime),
            "jti": str(uuid.uuid4()),
            "version": 2,
        }
        if not_before_in is not None:
            claims["nbf"] = now + not_before_in
        with self._lock:
            key = self._keys[-1]
        return jwt.encode(claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/health", _health),
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/.well-known/jwks.json", self._jwks),
                Route("/oauth2/token", self._token, methods=["POST"]),
                Route("/dev/token", self._dev_token, methods=["POST"]),
                Route("/dev/rotate", self._rotate, methods=["POST"]),
            ]
        )

    async def _discovery(self, _: Request) -> JSONResponse:
        url = self.config.url
        return JSONResponse(
            {
                "issuer": url,
                "jwks_uri": f"{url}/.well-known/jwks.json",
                "token_endpoint": f"{url}/oauth2/token",
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "id_token_signing_alg_values_supported": [ALGORITHM],
                "scopes_supported": list(self.config.scopes),
            }
        )

    async def _jwks(self, _: Request) -> JSONResponse:
        return JSONResponse(self.jwks(), headers={"Cache-Control": "max-age=300"})

    async def _token(self, request: Request) -> JSONResponse:
        """RFC 6749 section 4.4, with its error answers (section 5.2)."""
        # application/x-www-form-urlencoded, the grant's only encoding: no multipart parser.
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type")
        client_id, client_secret = _client_credentials(request.headers.get("authorization"))
        client_id = client_id or form.get("client_id", "")
        client_secret = client_secret or form.get("client_secret", "")
        known = secrets.compare_digest(client_id, self.config.client_id) and (
            secrets.compare_digest(client_secret, self.config.client_secret)
        )
        if not known:
            return _oauth_error(401, "invalid_client")
        requested = form.get("scope", "").split() or list(self.config.scopes)
        if not set(requested) <= set(self.config.scopes):
            return _oauth_error(400, "invalid_scope")
        token = self.mint(client_id, requested)
        return JSONResponse(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.config.lifetime},
            headers={"Cache-Control": "no-store"},
        )

    async def _dev_token(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
            subject = body["principal"]
            scopes = body.get("scopes", list(self.config.scopes))
            options = {name: body[name] for name in _DEV_OPTIONS if name in body}
            valid = (
                isinstance(subject, str)
                and bool(subject)
                and isinstance(scopes, list)
                and all(isinstance(options[name], _DEV_OPTIONS[name]) for name in options)
            )
        except (ValueError, KeyError, TypeError):
            valid = False
        if not valid:
            return JSONResponse(
                {"error": "invalid_request", "error_description": 'expected {"principal": name, '
                 '"scopes": [...], "lifetime"?, "not_before_in"?, "client_id"?, "token_use"?}'},
                status_code=400,
            )  # fmt: skip
        token = self.mint(subject, [str(scope) for scope in scopes], **options)
        return JSONResponse({"access_token": token, "token_type": "Bearer"})

    async def _rotate(self, _: Request) -> JSONResponse:
        return JSONResponse({"kid": self.rotate()})


async def _health(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def _oauth_error(status: int, error: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Basic realm="issuer"'} if status == 401 else None
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _client_credentials(authorization: str | None) -> tuple[str, str]:
    """The client id and secret of an HTTP Basic ``Authorization`` header, else empty."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        client_id, _, client_secret = base64.b64decode(value).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    return client_id, client_secret
