"""The API's ASGI layers, all pure ASGI (BaseHTTPMiddleware would run the app in another task and
stream every response through a memory channel, on every request).

Outermost first: :class:`HealthCheck` (wraps the FastAPI app, so the load balancer's probes skip
FastAPI entirely), then, inside FastAPI, :class:`RequestContext` (request and trace ids, access
log, last-resort 500) and :class:`BodySizeLimit`.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from opentelemetry import trace
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.core.errors import error_response
from servicekit.logging import log_context
from servicekit.tracing import current_trace_id

__all__ = ["HEALTH_PATH", "BodySizeLimit", "HealthCheck", "RequestContext"]

HEALTH_PATH = "/health"
_HEALTH_BODY = b'{"status":"ok"}'
_HEALTH_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_HEALTH_BODY)).encode()),
]

# A client's id is echoed into headers and logs: accept only short, plain tokens.
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_XRAY_ROOT = re.compile(r"1-[0-9a-f]{8}-[0-9a-f]{24}")

_access_log = logging.getLogger("api.access")
_log = logging.getLogger(__name__)


class HealthCheck:
    """Answers ``GET /health`` (liveness) itself; everything else goes to ``app``.

    ALB health checks arrive every few seconds from every load balancer node: they get no
    routing, no middleware, no access log line and no span. Liveness means "this worker's event
    loop answers", so no dependency is checked here (``/ready`` does that).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == HEALTH_PATH
            and scope["method"] in ("GET", "HEAD")
        ):
            await send({"type": "http.response.start", "status": 200, "headers": _HEALTH_HEADERS})
            body = _HEALTH_BODY if scope["method"] == "GET" else b""
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _trace_root(header: bytes | None) -> str | None:
    """The ``Root`` of an ``X-Amzn-Trace-Id`` header (``Root=1-...;Parent=...;Sampled=1``)."""
    if header is None:
        return None
    for part in header.decode("latin-1").split(";"):
        key, _, value = part.strip().partition("=")
        if key == "Root" and _XRAY_ROOT.fullmatch(value):
            return value
    return None


class _HttpMiddleware:
    """Runs :meth:`handle` for HTTP requests; other scopes (lifespan) pass straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class RequestContext(_HttpMiddleware):
    """Request id, trace id, access log and the last-resort 500 for every request.

    ``X-Request-ID`` is taken from the request (or generated), ``X-Amzn-Trace-Id`` from the
    current span (tracing on: FastAPI continued the ALB's trace) or from the request's header;
    both go into every log line of the request (``log_context``), into ``request.state`` and
    back to the client as response headers. An exception no handler took becomes a logged
    traceback and the 500 error shape, never a traceback to the client.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = _header(scope, b"x-request-id")
        request_id = given.decode() if given and _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        trace_id = current_trace_id() or _trace_root(_header(scope, b"x-amzn-trace-id"))
        scope.setdefault("state", {})["request_id"] = request_id
        # FastAPI's server span when tracing is on (a no-op span otherwise).
        trace.get_current_span().set_attribute("http.request.header.x-request-id", [request_id])
        extra_headers = [(b"x-request-id", request_id.encode())]
        if trace_id is not None:
            extra_headers.append((b"x-amzn-trace-id", f"Root={trace_id}".encode()))
        status: int | None = None
        started = time.perf_counter()

        async def send_with_ids(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), *extra_headers]}
            await send(message)

        ids = {"request_id": request_id} | ({"trace_id": trace_id} if trace_id else {})
        with log_context(**ids):
            try:
                await self.app(scope, receive, send_with_ids)
            except Exception:
                _log.exception("unhandled error in %s %s", scope["method"], scope["path"])
                if status is not None:
                    raise  # the response is under way: only dropping the connection is left
                response = error_response(scope, 500, "internal_error", "internal server error")
                await response(scope, receive, send_with_ids)
            finally:
                _access_log.info(
                    "%s %s %s",
                    scope["method"],
                    scope["path"],
                    status,
                    extra=_access_fields(scope, status, started),
                )


def _access_fields(scope: Scope, status: int | None, started: float) -> dict[str, Any]:
    client = scope.get("client")
    return {
        "http_method": scope["method"],
        "http_path": scope["path"],
        "http_status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        "client_ip": client[0] if client else None,
        "user_agent": (_header(scope, b"user-agent") or b"").decode("latin-1") or None,
    }


class RequestTooLarge(HTTPException):
    """Raised from ``receive`` past the limit (FastAPI lets an HTTPException through)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class BodySizeLimit(_HttpMiddleware):
    """413 for a request body over ``max_body_bytes`` (from settings), read or not.

    A declared ``Content-Length`` over the limit is refused before the app runs; a chunked body
    is counted as it arrives and refused as soon as it passes the limit, so an oversized upload
    is never held in memory.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit: int = scope["state"]["runtime"].settings.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(scope, receive, send, limit)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestTooLarge(limit)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except RequestTooLarge:
            # Normally FastAPI's handler answers it; this is for a reader that let it escape.
            if started:
                raise
            await _too_large(scope, receive, send, limit)


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    error = RequestTooLarge(limit)
    response = error_response(scope, 413, "content_too_large", str(error.detail))
    await response(scope, receive, send)
