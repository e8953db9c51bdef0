"""FastAPI dependencies: the worker's :class:`~api.core.runtime.Runtime`, and the caller.

``Reader`` and ``Writer`` authenticate the request's bearer token and require the scope
(``jobs:read``, ``jobs:write``; ``jobs:admin`` implies both): a route takes the caller as a
parameter, ``caller: Reader``. Answers, in the API's error shape and per RFC 6750: no token
401 with ``WWW-Authenticate: Bearer``; a token that fails any check 401 ``invalid_token`` (which
check is only logged); a valid token without the scope 403 ``insufficient_scope``.
"""

from __future__ import annotations

import logging
from typing import Annotated, cast

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

from api.core.errors import ApiError
from api.core.runtime import Runtime
from api.core.security import READ, WRITE, InvalidToken, Principal

__all__ = ["Reader", "RuntimeDep", "Writer", "authenticate", "get_runtime"]

_log = logging.getLogger(__name__)
_REALM = 'Bearer realm="jobs"'


def get_runtime(request: Request) -> Runtime:
    """The runtime the lifespan built (ASGI lifespan state, copied into every request)."""
    return cast(Runtime, request.state.runtime)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

# auto_error=False: a missing or non-Bearer Authorization header is answered below, in the
# API's error shape. The scheme is what gives /docs its Authorize button.
_bearer = HTTPBearer(
    auto_error=False,
    description="An access token from the issuer (locally: `make token PRINCIPAL=alice`).",
)


def authenticate(
    required: SecurityScopes,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The verified caller, holding every scope the route requires (plain def: may fetch keys)."""
    if credentials is None:
        raise ApiError(
            401, "unauthorized", "a bearer token is required", headers={"WWW-Authenticate": _REALM}
        )
    try:
        principal = runtime.tokens.verify(credentials.credentials)
    except InvalidToken as error:
        _log.info("bearer token refused: %s", error)
        raise ApiError(
            401,
            "invalid_token",
            "the bearer token is not valid",
            headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
        ) from None
    missing = [scope for scope in required.scopes if not principal.allows(scope)]
    if missing:
        names = " ".join(runtime.settings.auth.scope_prefix + scope for scope in missing)
        _log.info(
            "%s lacks the scope %s",
            principal.subject,
            names,
            extra={"principal": principal.subject},
        )
        raise ApiError(
            403,
            "insufficient_scope",
            f"the token lacks the scope {names}",
            headers={"WWW-Authenticate": f'{_REALM}, error="insufficient_scope", scope="{names}"'},
        )
    return principal


Reader = Annotated[Principal, Security(authenticate, scopes=[READ])]
Writer = Annotated[Principal, Security(authenticate, scopes=[WRITE])]
