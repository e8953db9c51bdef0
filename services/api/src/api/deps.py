"""FastAPI dependencies: the worker's :class:`~api.core.runtime.Runtime`, and the caller.

``Reader``, ``Writer`` and ``Admin`` authenticate the request's bearer token and require the
scope (``jobs:read``, ``jobs:write``, ``jobs:admin``; ``jobs:admin`` implies the other two): a
route takes the caller as a parameter, ``caller: Reader``. Answers, in the API's error shape and
per RFC 6750: no token 401 with ``WWW-Authenticate: Bearer``; a token that fails any check 401
``invalid_token`` (which check is only logged); a valid token without the scope 403
``insufficient_scope``.

FastAPI reads and parses a request's JSON body before it runs any dependency, so a body that is
not JSON would be answered 422 before the caller is known. Routes of a router with
``route_class=AuthenticatedRoute`` authenticate first in that case too: an anonymous caller gets
401 whatever it sends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, cast

from fastapi import Depends, Request, Response, Security
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from api.core.errors import ApiError
from api.core.runtime import Runtime
from api.core.security import ADMIN, READ, WRITE, InvalidToken, Principal

__all__ = [
    "Admin",
    "AuthenticatedRoute",
    "Reader",
    "RuntimeDep",
    "Writer",
    "authenticate",
    "get_runtime",
]

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


async def authenticate(
    required: SecurityScopes,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The verified caller, holding every scope the route requires.

    A token verified before is answered on the event loop; a new one is verified in the
    threadpool (the issuer's keys may have to be fetched).
    """
    if credentials is None:
        raise ApiError(
            401, "unauthorized", "a bearer token is required", headers={"WWW-Authenticate": _REALM}
        )
    token = credentials.credentials
    principal = runtime.tokens.remembered(token)
    if principal is None:
        try:
            principal = await run_in_threadpool(runtime.tokens.verify, token)
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
Admin = Annotated[Principal, Security(authenticate, scopes=[ADMIN])]


def _required_scopes(dependant: Dependant) -> list[str] | None:
    """The scopes the route's ``authenticate`` dependency requires; None when it has none."""
    for dependency in dependant.dependencies:
        if dependency.call is authenticate:
            return [*(dependency.parent_oauth_scopes or []), *(dependency.own_oauth_scopes or [])]
        scopes = _required_scopes(dependency)
        if scopes is not None:
            return scopes
    return None


def _unparsable_body(error: Exception) -> bool:
    """FastAPI gave up on the body before running the dependencies.

    Malformed JSON is a 422 ``json_invalid``; bytes that are not UTF-8 are FastAPI's
    ``HTTPException(400)`` ("There was an error parsing the body"), the only 400 it raises.
    """
    if isinstance(error, RequestValidationError):
        return any(problem["type"] == "json_invalid" for problem in error.errors())
    return isinstance(error, HTTPException) and error.status_code == 400


class AuthenticatedRoute(APIRoute):
    """A route whose caller is checked before a body FastAPI could not parse is answered.

    Either way the answer to an unparsable body is one documented 422 ``json_invalid`` (FastAPI
    would answer bytes that are not UTF-8 with an undocumented 400). The happy path is
    untouched: only a request that already failed pays for the extra check.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        scopes = _required_scopes(self.dependant)
        if scopes is None or self.body_field is None:
            return handler

        async def authenticated_first(request: Request) -> Response:
            try:
                return await handler(request)
            except (RequestValidationError, HTTPException) as error:
                if not _unparsable_body(error):
                    raise
                credentials = await _bearer(request)
                required = SecurityScopes(scopes=scopes)
                await authenticate(required, get_runtime(request), credentials)
                if isinstance(error, RequestValidationError):
                    raise
                raise RequestValidationError(
                    [{"type": "json_invalid", "loc": ("body",), "msg": "the body is not UTF-8"}]
                ) from None

        return authenticated_first
