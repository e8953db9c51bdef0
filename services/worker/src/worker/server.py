"""The worker's internal HTTP endpoints (port 8080, behind the internal ALB).

- ``GET /health``: liveness, the consumer's receive loop went round recently (no dependency call:
  a database outage must not get every task restarted);
- ``GET /ready``: the database and the queue answer, and the worker is not stopping;
- ``GET /stats``: in-flight, running, processed, failed and poisoned counts, for other services
  through service discovery.

The standard library's ThreadingHTTPServer is enough for a handful of probes a second and adds
no dependency or event loop beside the consumer's threads.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from servicekit.health import HealthRegistry, HealthReport

__all__ = ["serve"]


def serve(port: int, health: HealthRegistry, stats: Callable[[], object]) -> ThreadingHTTPServer:
    """Start the server on all interfaces (the internal ALB reaches the task's ENI) on a daemon
    thread; ``shutdown()`` it when the worker stops."""

    def report(check: Callable[[], HealthReport]) -> tuple[int, dict[str, object]]:
        result = check()
        return (200 if result.ok else 503), result.as_dict()

    routes: dict[str, Callable[[], tuple[int, Any]]] = {
        "/health": lambda: report(health.liveness),
        "/ready": lambda: report(health.readiness),
        "/stats": lambda: (200, dataclasses.asdict(stats())),  # type: ignore[call-overload]
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the ALB's health checker expects

        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            status, body = route() if route else (404, {"error": "not_found"})
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            # Probes arrive every few seconds from every ALB node: not worth a log line each.
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)  # noqa: S104
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
