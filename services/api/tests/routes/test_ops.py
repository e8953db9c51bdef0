"""``/ops/workers``: the api calls every task Cloud Map's name answers, and the load balancer.

The worker tasks are HTTP servers on loopback addresses (127.0.0.2, 127.0.0.3) answering ``/stats``
and ``/ready`` as the worker does; the name's multivalue answer is a hosts file, which the api
process (the container's command) sees in a mount namespace of its own (``unshare``), so the
lookup is the real resolver's. A third address has no task (a task that stopped since the answer).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from servicekit.consumer import ConsumerStats
from servicekit.testing.moto import free_port

NAME = "worker.test.suite.internal"
TASKS = ("127.0.0.2", "127.0.0.3")
GONE = "127.0.0.4"
TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


class WorkerTask(ThreadingHTTPServer):
    """A worker task's HTTP endpoints; also takes spans (the collector's OTLP path)."""

    def __init__(self, address: str, port: int, processed: int) -> None:
        self.stats = ConsumerStats(
            in_flight=1, running=1, processed=processed, failed=0, poisoned=0, deferred=0,
            ready=True, seconds_since_loop=0.1,
        )  # fmt: skip
        self.calls: list[tuple[str, dict[str, str]]] = []
        super().__init__((address, port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: WorkerTask

    def do_GET(self) -> None:
        self.server.calls.append((self.path, dict(self.headers)))
        if self.path == "/stats":
            self._answer(200, dataclasses.asdict(self.server.stats))
        elif self.path == "/ready":
            self._answer(200, {"status": "ok"})
        else:
            self._answer(404, {})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer(200, {})

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def tasks() -> Iterator[list[WorkerTask]]:
    port = free_port()
    servers = [WorkerTask(address, port, processed) for processed, address in enumerate(TASKS, 5)]
    threads = [threading.Thread(target=server.serve_forever, daemon=True) for server in servers]
    for thread in threads:
        thread.start()
    yield servers
    for server, thread in zip(servers, threads, strict=True):
        server.shutdown()
        server.server_close()
        thread.join()


def _namespace_with_hosts(tmp_path: Path) -> list[str]:
    """A command prefix running the api with a hosts file naming every task (and one gone)."""
    if (
        shutil.which("unshare") is None
        or subprocess.run(
            ["unshare", "--mount", "true"], capture_output=True, check=False
        ).returncode
    ):
        pytest.skip("needs unshare --mount (root or CAP_SYS_ADMIN) for the resolver's answer")
    hosts = tmp_path / "hosts"
    lines = [f"{address} {NAME}" for address in (*TASKS, GONE)]
    hosts.write_text(Path("/etc/hosts").read_text() + "\n".join(lines) + "\n")
    mount = 'mount --bind "$0" /etc/hosts && exec "$@"'
    return ["unshare", "--mount", "sh", "-c", mount, str(hosts)]


def test_every_task_answers_through_the_name_and_the_fleet_through_the_alb(
    api_env: Any,
    tasks: list[WorkerTask],
    serve: Callable[..., Any],
    bearer: Callable[..., dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    port = tasks[0].server_address[1]
    alb = f"http://{TASKS[0]}:{port}"  # the load balancer's stand-in: one task behind it
    monkeypatch.setenv("WORKER__DISCOVERY_NAME", NAME)
    monkeypatch.setenv("WORKER__ALB_URL", alb)
    monkeypatch.setenv("WORKER__PORT", str(port))
    monkeypatch.setenv("WORKER__TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("TRACING_ENABLED", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", alb)
    server = serve(wrapper=_namespace_with_hosts(tmp_path))

    response = server.get("/ops/workers")
    assert response.status_code == 403, response.text  # jobs:read and jobs:write are not enough
    server.headers = bearer(principal="ops", scopes=("jobs:admin",)) | {"X-Amzn-Trace-Id": TRACE}
    response = server.get("/ops/workers")

    assert response.status_code == 200, response.text
    fleet = response.json()
    assert fleet["discovery_name"] == NAME
    assert fleet["ready"] == "ok"
    by_address = {task["address"]: task for task in fleet["tasks"]}
    assert sorted(by_address) == [*TASKS, GONE]
    for task in tasks:
        answered = by_address[task.server_address[0]]
        assert answered["status"] == "ok"
        assert answered["stats"] == dataclasses.asdict(task.stats)
    assert by_address[GONE] == {"address": GONE, "status": "unreachable", "stats": None}
    # The ALB's stand-in had /ready as well as /stats; the other task only /stats.
    assert [path for path, _ in tasks[0].calls] in (["/stats", "/ready"], ["/ready", "/stats"])
    assert [path for path, _ in tasks[1].calls] == ["/stats"]
    # The caller's trace continues into each call, under the api's own spans.
    for task in tasks:
        for _, headers in task.calls:
            sent = dict(part.split("=") for part in headers["X-Amzn-Trace-Id"].split(";"))
            assert sent["Root"] == "1-5759e988-bd862e3fe1be46a994272793"
            assert sent["Parent"] != "53995c3f42cd8ad8"


def test_unconfigured_fleet_answers_503(
    client: TestClient, bearer: Callable[..., dict[str, str]]
) -> None:
    response = client.get("/ops/workers", headers=bearer(scopes=("jobs:admin",)))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_configured"
