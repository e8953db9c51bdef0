"""The one JSON error shape of the API, and the handlers that produce it.

Every error a client sees, from validation to an unhandled exception, is
``{"error": {"code", "message", "details", "request_id"}}``: clients parse one shape, and the
``request_id`` finds the matching log lines. No stack trace or exception text reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.routing import compile_path
from starlette.types import Scope

from servicekit.errors import DependencyUnavailable

__all__ = ["ApiError", "error_response", "install_error_handlers", "request_id_of"]

_log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the API answers on purpose, with its own code (``job_not_found``...)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def request_id_of(scope: Scope) -> str | None:
    """The id :class:`api.core.middleware.RequestContext` gave this request."""
    state = scope.get("state")
    return state.get("request_id") if state is not None else None


def error_response(
    scope: Scope,
    status: int,
    code: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {
        "error": {
            "code": code,
            "message": message,
            "details": details or [],
            "request_id": request_id_of(scope),
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


# Python's phrases differ between versions (413 became "Content Too Large" in 3.13).
_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "content_too_large"}


def _status_code_name(status: int) -> str:
    if status in _CODES:
        return _CODES[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


async def _api_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    return error_response(
        request.scope,
        error.status,
        error.code,
        error.message,
        details=error.details,
        headers=error.headers,
    )


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    message = (
        error.detail if isinstance(error.detail, str) else HTTPStatus(error.status_code).phrase
    )
    return error_response(
        request.scope,
        error.status_code,
        _status_code_name(error.status_code),
        message,
        headers=error.headers,
    )


def _allowed_methods(request: Request) -> str:
    """Every method of every route at the request's path, and OPTIONS (answered here)."""
    methods = {"OPTIONS"}
    path = request.url.path
    for route in iter_route_contexts(request.app.router.routes):
        if route.path and route.methods and compile_path(route.path)[0].match(path):
            methods |= route.methods
    return ", ".join(sorted(methods))


async def _method_not_allowed(request: Request, error: Exception) -> Response:
    """405 with an ``Allow`` naming every method of the path; OPTIONS answered with that list.

    Starlette's router names only the methods of the first route whose path matched
    (``POST /jobs`` and ``GET /jobs`` are two routes), and it has no OPTIONS answer of its own:
    both arrive here as a 405.
    """
    allow = {"Allow": _allowed_methods(request)}
    if request.method == "OPTIONS":
        return Response(status_code=204, headers=allow)
    return error_response(
        request.scope,
        405,
        "method_not_allowed",
        f"{request.method} is not allowed here; allowed: {allow['Allow']}",
        headers=allow,
    )


def _printable(text: str) -> str:
    # A location can hold a client's key ({"\ud800": 1} as an unexpected field): a lone
    # surrogate there would make the error response itself fail to encode.
    return text.encode("utf-8", "backslashreplace").decode()


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    # The offending input is left out: it can be large, and it is the client's own data anyway.
    details = [
        {
            "field": _printable(".".join(str(part) for part in problem["loc"])),
            "message": problem["msg"],
            "type": problem["type"],
        }
        for problem in error.errors()
    ]
    fields = ", ".join(detail["field"] for detail in details)
    return error_response(
        request.scope, 422, "validation_error", f"invalid request: {fields}", details=details
    )


async def _dependency_unavailable(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, DependencyUnavailable)
    # The reason (host names, driver messages) is for the logs, not for clients.
    _log.warning("answering 503: %s", error)
    retry_after = request.state.runtime.settings.retry_after_seconds
    return error_response(
        request.scope,
        503,
        "dependency_unavailable",
        f"{error.dependency} is unavailable, retry later",
        headers={"Retry-After": str(retry_after)},
    )


def install_error_handlers(app: FastAPI) -> None:
    """Answer every handled error in the one shape (unhandled ones: RequestContext)."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(405, _method_not_allowed)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DependencyUnavailable, _dependency_unavailable)
