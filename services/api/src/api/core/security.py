"""Who is calling: OAuth 2.0 bearer access tokens (JWTs) from the issuer, verified with PyJWT.

The checks, all of them before a route runs: the signature against the issuer's published keys
(RS256 only, so ``alg: none`` and HMAC-with-the-public-key tricks are refused), ``iss``,
``exp``/``nbf``/``iat`` with a small leeway, ``token_use == "access"`` (Cognito's ID tokens are
signed by the same keys), and the app client (``client_id``, or ``aud`` when the token has one)
among the accepted audiences. The scopes are the token's ``scope`` claim with the issuer's
prefix taken off; ``jobs:admin`` implies every other.

The keys come from the issuer's JWKS through :class:`jwt.PyJWKClient`: fetched once and kept
(``jwks_cache_seconds``), fetched again when a token names an unknown ``kid`` (a rotation), but
at most once per ``jwks_refetch_seconds`` however many made-up ``kid``\\ s arrive, each fetch with
a short timeout. Verification is blocking (a fetch can happen), so it runs in the threadpool.

A client sends the same token for its whole lifetime (an hour from Cognito), so a verified token
is remembered (the exact string, signature included) with its principal until its ``exp`` plus
the leeway, least recently used first out: a request with a token seen before is answered from
memory on the event loop, without the RS256 check (about 140 us of CPU) and the threadpool hop.
The scopes a route requires are checked on every request.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from api.core.config import AuthSettings
from servicekit.errors import DependencyUnavailable

__all__ = [
    "ADMIN",
    "ALGORITHMS",
    "READ",
    "WRITE",
    "InvalidToken",
    "Principal",
    "TokenVerifier",
]

READ = "jobs:read"
WRITE = "jobs:write"
ADMIN = "jobs:admin"
ALGORITHMS = ("RS256",)
_REQUIRED_CLAIMS = ["iss", "sub", "exp", "iat", "token_use"]


@dataclass(frozen=True)
class Principal:
    """The caller: ``subject`` is the token's ``sub`` (Cognito client credentials: the client)."""

    subject: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.scopes

    def allows(self, scope: str) -> bool:
        return self.is_admin or scope in self.scopes


class InvalidToken(Exception):
    """The token is not one this API accepts; the reason is for the logs, not for the caller."""


class TokenVerifier:
    """Verifies access tokens against one issuer; one per worker process (it caches keys)."""

    def __init__(self, settings: AuthSettings, *, remember: int = 1024) -> None:
        self.settings = settings
        self._remember = remember
        # token -> (principal, time.time() after which it is expired); verify() runs on the
        # threadpool's threads, so the order and the bound are kept under a lock.
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._keys = jwt.PyJWKClient(
            settings.jwks_endpoint,
            cache_jwk_set=True,
            lifespan=settings.jwks_cache_seconds,
            timeout=settings.jwks_timeout_seconds,
            cooldown_duration=settings.jwks_refetch_seconds,
        )

    def verify(self, token: str) -> Principal:
        """The token's principal, remembered for :meth:`remembered`; :class:`InvalidToken` if
        any check fails.

        :class:`~servicekit.errors.DependencyUnavailable` when the issuer's keys cannot be
        fetched: the token may well be good, so that is a 503, not a 401.
        """
        claims = self._verified_claims(token)
        principal = self._principal(claims)
        with self._lock:
            self._verified[token] = (principal, claims["exp"] + self.settings.leeway_seconds)
            self._verified.move_to_end(token)
            if len(self._verified) > self._remember:
                self._verified.popitem(last=False)
        return principal

    def remembered(self, token: str) -> Principal | None:
        """The principal of ``token`` if :meth:`verify` accepted it and it has not expired since;
        None otherwise. No I/O and no signature check: cheap enough for the event loop."""
        with self._lock:
            entry = self._verified.get(token)
            if entry is None:
                return None
            principal, expires = entry
            if time.time() > expires:
                del self._verified[token]
                return None
            self._verified.move_to_end(token)
            return principal

    def _principal(self, claims: dict[str, Any]) -> Principal:
        if claims["token_use"] != "access":  # noqa: S105 - a claim, not a password
            raise InvalidToken(f"token_use is {claims['token_use']!r}, not 'access'")
        if not self._audiences_of(claims) & self.settings.audiences:
            raise InvalidToken("neither client_id nor aud is an accepted audience")
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise InvalidToken("scope is not a string")
        prefix = self.settings.scope_prefix
        scopes = frozenset(
            name.removeprefix(prefix) for name in scope.split() if name.startswith(prefix)
        )
        return Principal(subject=str(claims["sub"]), scopes=scopes)

    def _verified_claims(self, token: str) -> dict[str, Any]:
        try:
            # The header first: a token that could never pass costs no key lookup, and no fetch.
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in ALGORITHMS or not isinstance(header.get("kid"), str):
                raise InvalidToken(f"alg {header.get('alg')!r} or kid not acceptable")
            key = self._keys.get_signing_key(header["kid"])
            return jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_seconds,
                # Cognito's access tokens carry client_id, not aud: checked by the caller.
                options={"require": _REQUIRED_CLAIMS, "verify_aud": False},
            )
        except jwt.PyJWKClientConnectionError as error:
            raise DependencyUnavailable("token issuer", str(error)) from None
        except jwt.PyJWTError as error:
            raise InvalidToken(f"{type(error).__name__}: {error}") from None

    @staticmethod
    def _audiences_of(claims: dict[str, Any]) -> set[str]:
        audience = claims.get("aud")
        audiences = {audience} if isinstance(audience, str) else set(audience or ())
        client_id = claims.get("client_id")
        if isinstance(client_id, str):
            audiences.add(client_id)
        return {value for value in audiences if isinstance(value, str)}
