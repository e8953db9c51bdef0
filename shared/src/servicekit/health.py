"""Liveness and readiness checks, each run with a deadline, reported without secrets.

Liveness answers "is this process working at all" (ECS restarts the task when it fails), so its
checks must not depend on anything outside the process: a database outage restarting every task
makes the outage worse. Readiness answers "can it take work now" (the load balancer routes
around it, a consumer pauses) and is where dependency checks belong.

Checks run in parallel, each on its own daemon thread with its own timeout: a hung dependency
makes its check report "timed out" instead of hanging the endpoint, and a check still hung from
an earlier report is awaited again rather than started twice, so a dependency that never
answers costs one thread, not one per probe. Daemon threads, not a ThreadPoolExecutor: the
executor's workers are joined at exit, so a hung check would also hang the shutdown.

:class:`HealthServer` answers a registry over HTTP for processes without a web framework.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from servicekit.logging import redact

__all__ = ["Check", "HealthRegistry", "HealthReport", "HealthServer"]

Check = Callable[[], None]

_MAX_REASON = 200
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthReport:
    """``ok`` when every check passed; ``checks`` maps each name to "ok" or a short reason."""

    ok: bool
    checks: dict[str, str]

    def as_dict(self) -> dict[str, object]:
        return {"status": "ok" if self.ok else "fail", "checks": dict(self.checks)}


@dataclass(frozen=True)
class _Registered:
    check: Check
    timeout: float


def _reason(error: Exception) -> str:
    # The first line only: a multi-line message is usually a dump (a query, a response body).
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 3] + "..."
    return redact(text)


class HealthRegistry:
    """Named liveness and readiness checks; a check is a callable that raises on failure."""

    def __init__(self, *, timeout: float = 2.0) -> None:
        self.timeout = timeout
        self._liveness: dict[str, _Registered] = {}
        self._readiness: dict[str, _Registered] = {}
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], Future[None]] = {}
        self._last: dict[tuple[str, str], str] = {}

    def add_liveness(self, name: str, check: Check, *, timeout: float | None = None) -> None:
        self._add(self._liveness, "liveness", name, check, timeout)

    def add_readiness(self, name: str, check: Check, *, timeout: float | None = None) -> None:
        self._add(self._readiness, "readiness", name, check, timeout)

    def liveness(self) -> HealthReport:
        return self._report("liveness", self._liveness)

    def readiness(self) -> HealthReport:
        return self._report("readiness", self._readiness)

    def _add(
        self,
        checks: dict[str, _Registered],
        kind: str,
        name: str,
        check: Check,
        timeout: float | None,
    ) -> None:
        with self._lock:
            if name in checks:
                raise ValueError(f"{kind} check {name!r} is already registered")
            checks[name] = _Registered(check, self.timeout if timeout is None else timeout)

    def _start(self, key: tuple[str, str], check: Check) -> Future[None]:
        with self._lock:
            running = self._running.get(key)
            if running is not None and not running.done():
                return running
            future: Future[None] = Future()
            self._running[key] = future

        def run() -> None:
            try:
                check()
            except Exception as error:
                future.set_exception(error)
            except BaseException as error:
                # SystemExit must still complete the future, or every later probe would wait on
                # it; it is not re-raised in the prober's thread either.
                future.set_exception(RuntimeError(f"check raised {type(error).__name__}"))
            else:
                future.set_result(None)

        threading.Thread(target=run, name=f"health-{key[1]}", daemon=True).start()
        return future

    def _report(self, kind: str, checks: dict[str, _Registered]) -> HealthReport:
        started = time.monotonic()
        with self._lock:
            registered = dict(checks)
        futures = {
            name: self._start((kind, name), entry.check) for name, entry in registered.items()
        }
        results: dict[str, str] = {}
        for name, entry in registered.items():
            remaining = entry.timeout - (time.monotonic() - started)
            try:
                futures[name].result(timeout=max(remaining, 0.0))
            except FutureTimeout:
                results[name] = f"timed out after {entry.timeout:g}s"
            except Exception as error:
                results[name] = _reason(error)
            else:
                results[name] = "ok"
            self._note_change((kind, name), results[name])
        return HealthReport(ok=all(result == "ok" for result in results.values()), checks=results)

    def _note_change(self, key: tuple[str, str], result: str) -> None:
        # Probes come every few seconds: log transitions, not every failing probe.
        with self._lock:
            previous = self._last.get(key, "ok")
            self._last[key] = result
        if result != previous:
            if result == "ok":
                _log.info("%s check %s recovered", key[0], key[1])
            else:
                _log.warning("%s check %s failing: %s", key[0], key[1], result)


class HealthServer:
    """``GET /health`` (liveness), ``GET /ready`` (readiness) and extra JSON routes over HTTP.

    For processes without a web framework (the worker, the scheduler's serve mode): the standard
    library's ThreadingHTTPServer is enough for a handful of probes a second and adds no
    dependency or event loop. Every answer is JSON and ``no-store``: a report 200, or 503 when a
    check fails; an extra route (``routes={"/stats": ...}``) 200 with what its callable returns;
    anything else 404. Serves from construction, on a daemon thread, on all interfaces by default
    (the ALB or the container health check reaches the task from outside); :meth:`close` stops it.
    """

    def __init__(
        self,
        health: HealthRegistry,
        port: int,
        *,
        routes: Mapping[str, Callable[[], object]] | None = None,
        host: str = "0.0.0.0",  # noqa: S104
    ) -> None:
        self.health = health
        self.routes = dict(routes or {})
        self._server = _Server((host, port), self._answer)
        threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True).start()

    @property
    def port(self) -> int:
        """The port it listens on (the one the system chose when given 0)."""
        return int(self._server.server_address[1])

    def close(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, path: str) -> tuple[int, object]:
        if path in ("/health", "/ready"):
            report = self.health.liveness() if path == "/health" else self.health.readiness()
            return (200 if report.ok else 503), report.as_dict()
        route = self.routes.get(path)
        if route is None:
            return 404, {"error": "not_found"}
        return 200, route()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the ALB's health checker expects
    server: _Server

    def do_GET(self) -> None:
        status, body = self.server.answer(self.path.split("?", 1)[0])
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes come every few seconds from every load balancer node: noise


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], answer: Callable[[str], tuple[int, object]]
    ) -> None:
        super().__init__(address, _Handler)
        self.answer = answer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver's default prints a traceback to stderr: not a JSON log line. A prober
        # that hangs up before reading the whole answer is routine; anything else is logged.
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            _log.debug("health client %s hung up: %r", client_address[0], error)
        else:
            _log.exception("health request from %s failed", client_address[0])
